"""Benchmark: SONATA export and Neuroglancer states of built graphs.

    python bench/export.py GRAPH_DIR [GRAPH_DIR ...]      # folders written by pipelines.build_graph

Per graph, each measurement in a fresh Python process:

* ``sonata``: load the graph, then ``to_sonata`` into a temporary folder: export seconds, file
  sizes, the process's peak RSS (``ru_maxrss``, graph included) and the export's own peak traced
  allocation (``tracemalloc``, a second run); the circuit is read back with libsonata (edge count
  and the afferent edges of one node checked against the graph) when libsonata is installed.
  Also the export with ``--compression gzip`` (seconds and edges.h5 size; not readable by
  libsonata's wheel).
* ``neuroglancer``: ``neuroglancer_state`` of the graph's largest population: seconds (nglui
  import excluded), cells, URL length and JSON size.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SONATA = r"""
import json, resource, shutil, sys, tempfile, time, tracemalloc
from pathlib import Path
from connectomics import load_graph
from connectomics.export import to_sonata
folder, traced, compression = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
t0 = time.perf_counter(); g = load_graph(folder); load_s = time.perf_counter() - t0
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = Path(tempfile.mkdtemp()) / "circuit"
if traced:
    tracemalloc.start()
res = to_sonata(g, out, compression=None if compression == "none" else compression)
peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else None
check = None
if not traced and compression == "none":
    try:
        import libsonata
    except ImportError:
        libsonata = None
    if libsonata is not None:
        ep = libsonata.EdgeStorage(str(res.files["edges"])).open_population(res.edge_population)
        node = int(g.edges["post"].iloc[len(g.edges) // 2])
        aff = sorted(ep.source_nodes(ep.afferent_edges([node])).tolist())
        check = ep.size == len(g.edges) and aff == sorted(g.edges.loc[g.edges["post"] == node, "pre"].tolist())
print(json.dumps({"nodes": res.n_nodes, "edges": res.n_edges, "load_s": load_s, "export_s": res.seconds,
                  "sizes": res.sizes(), "rss_before_mb": rss0,
                  "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "traced_peak_mb": peak, "libsonata_ok": check}))
shutil.rmtree(out.parent)
"""

NEUROGLANCER = r"""
import json, sys, time
import nglui.statebuilder, neuroglancer
from connectomics import load_graph, population_key
from connectomics.export import neuroglancer_state
g = load_graph(sys.argv[1])
pop = population_key(g.nodes["cell_type"], g.nodes["layer"]).value_counts().index[0]
t0 = time.perf_counter(); st = neuroglancer_state(g, population=pop); s = time.perf_counter() - t0
print(json.dumps({"population": pop, "cells": len(st.segments), "seconds": s, "url_chars": len(st.url),
                  "json_bytes": len(st.to_json(indent=None))}))
"""


def _run(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"bench/export.py: {args[0]}: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("graphs", nargs="+", help="graph folders")
    args = ap.parse_args(argv)
    print("| graph | cells | edges | load s | SONATA export s | nodes.h5 MB | edges.h5 MB | peak RSS MB "
          "(graph loaded) | export traced peak MB | libsonata check | gzip: s / edges.h5 MB | "
          "Neuroglancer: population, cells, s, URL chars |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for folder in args.graphs:
        plain = _run(SONATA, folder, "0", "none")
        traced = _run(SONATA, folder, "1", "none")
        gz = _run(SONATA, folder, "0", "gzip")
        ng = _run(NEUROGLANCER, folder)
        mb = 1e6
        pop = ng["population"].replace("|", "\\|")     # a literal | would split the table cell
        print(f"| {Path(folder).name} | {plain['nodes']:,} | {plain['edges']:,} | {plain['load_s']:.1f} | "
              f"{plain['export_s']:.1f} | {plain['sizes']['nodes'] / mb:.2f} | {plain['sizes']['edges'] / mb:.1f} | "
              f"{plain['rss_peak_mb']:,.0f} ({plain['rss_before_mb']:,.0f}) | {traced['traced_peak_mb']:,.0f} | "
              f"{plain['libsonata_ok']} | {gz['export_s']:.1f} / {gz['sizes']['edges'] / mb:.1f} | "
              f"{pop}, {ng['cells']:,}, {ng['seconds']:.1f}, {ng['url_chars']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
