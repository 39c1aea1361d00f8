"""Benchmark: the volume surrogate (whole minnie65 cubic millimetre) built with the local and the
Dask engine, and a column compiled over every excitatory cell of it (sparse vs dense).

    python bench/volume.py                              # full size (~15 min on 2 busy cores)
    python bench/volume.py --fraction 0.1               # a tenth of the cells (~1 min)
    python bench/volume.py --phases build model         # some phases only (results are merged)

Cells: ``--cells PATH`` (default: ``../shared/data/microns/nriedman_microns/cells_no_repeats.csv``
when present, else :func:`connectomics.sources.volume.synthetic_cell_table` with as many cells: the
table says which). Every measurement runs in a fresh Python process (peak memory = its
``ru_maxrss``; with Dask also the largest worker's). Phases:

``build``
    ``connectomics.build.build_graph`` into an empty cache, once with ``local`` and once with ``dask`` on a
    ``LocalCluster`` of ``--workers`` worker processes (1 thread each): synapse generation
    (partitioned Parquet) + aggregation + graph files. Then aggregation alone over the cached
    partitions with each engine. The Dask edges are checked identical to the local ones.
``model``
    ``graphnet.compile_column`` of the volume graph with one layer per excitatory class over
    every excitatory cell (A 4P -> B 23P -> C 5P-IT/ET/NP -> D 6P-IT/CT, any soma layer,
    within-layer links, Dale, graded inhibition, LayerNorm, noise 0.1; Hebbian off):
    forward+backward seconds per batch (``--batch``, ``--in-features``), ``--steps`` AdamW steps
    of a 7-way readout on one fixed random batch (loss first -> last), peak memory. Dense is
    run only where its estimated training memory (``graphnet.backend.dense_training_bytes``)
    fits ``--mem-budget-gb``, else skipped with the estimate; sparse and dense are also compared
    on a ``--dense-fraction`` volume where dense fits.

Results are merged into ``bench/out/volume.json`` (per fraction) and the markdown table is
printed and written to ``bench/out/volume.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
REAL_CELLS = ROOT.parent / "shared" / "data" / "microns" / "nriedman_microns" / "cells_no_repeats.csv"
REAL_ROWS = 56209
TORCH_THREADS = 1
sys.path.insert(0, str(ROOT))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------------------------
# children (one fresh process per measurement)
# ------------------------------------------------------------------------------------------------
def child_build(a: dict) -> dict:
    from connectomics.build import build_graph
    from connectomics.sources.volume import VolumeSource

    src = VolumeSource(a["cells"], seed=a["seed"], fraction=a["fraction"])
    t0 = time.perf_counter()
    res = build_graph(src, a["cache"], engine=a["engine"], n_workers=a["workers"], progress=False)
    t = res.graph.meta["timings"]
    return {"cells": res.graph.n_nodes, "synapses": res.graph.meta["n_synapses"],
            "edges": res.graph.meta["n_edges"], "partitions": res.graph.meta["synapse_files"],
            "generate_s": t["tables_s"], "aggregate_s": t["aggregate_s"],
            "total_s": time.perf_counter() - t0, "driver_peak_mb": _peak_mb(),
            "worker_peak_mb": t.get("worker_peak_mb"), "graph": str(res.folder)}


def child_aggregate(a: dict) -> dict:
    import pandas as pd

    from connectomics.cache import TableCache
    from connectomics.dask_engine import aggregate_dask, aggregate_local, dask_client
    from connectomics.schema import SYNAPSE_TABLE

    cache = TableCache(a["cache_root"], "volume", a["version"])
    files = cache.partition_files(SYNAPSE_TABLE, verify=False)
    roots = pd.read_parquet(Path(a["graph"]) / "nodes.parquet", columns=["root_id"])["root_id"].to_numpy()
    out = {}
    if a["engine"] == "local":
        t0 = time.perf_counter()
        edges = aggregate_local(files, roots)
        out["aggregate_s"] = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        with dask_client(n_workers=a["workers"]) as client:
            out["cluster_start_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            edges = aggregate_dask(files, roots, client)
            out["aggregate_s"] = time.perf_counter() - t0
            out["worker_peak_mb"] = max(client.run(_peak_mb).values())
    out.update(edges=len(edges), synapses=int(edges["n_synapses"].sum()), driver_peak_mb=_peak_mb())
    return out


def volume_spec(backend: str):
    from graphnet import LayerSpec, chain

    return chain([LayerSpec("A", ("4P",), None), LayerSpec("B", ("23P",), None),
                  LayerSpec("C", ("5P-IT", "5P-ET", "5P-NP"), None),
                  LayerSpec("D", ("6P-IT", "6P-CT"), None)],
                 backend=backend, noise_std=0.1, hebbian_rate=0.0, homeostasis=False, name="volume")


def child_model(a: dict) -> dict:
    import numpy as np
    import torch

    from connectomics.graph import load_graph
    from graphnet import compile_column

    torch.manual_seed(0)
    g = load_graph(a["graph"])
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    col = compile_column(g, volume_spec(a["backend"]), in_features=a["in_features"])
    compile_s = time.perf_counter() - t0
    _, proj = col.summary()
    head = torch.nn.Linear(col.out_features, 7)
    opt = torch.optim.AdamW(list(col.parameters()) + list(head.parameters()), lr=a["lr"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a["batch"], a["in_features"], generator=gen)
    y = torch.randint(0, 7, (a["batch"],), generator=gen)
    col.train()
    fb, losses = [], []
    for step in range(a["steps"] + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(head(col(x)), y)
        opt.zero_grad()
        loss.backward()
        fb.append(time.perf_counter() - t0)
        opt.step()
        losses.append(loss.item())
    layers = {n: l.size for n, l in col.layers.items()}
    edges = int(proj["edges"].iloc[1:].sum())
    return {"units": layers, "connectome_edges": edges, "parameters": int(sum(p.numel() for p in col.parameters())),
            "compile_s": compile_s, "fwd_bwd_s": float(np.median(fb[1:])), "loss_first": losses[0],
            "loss_last": losses[-1], "steps": a["steps"], "peak_mb": _peak_mb(),
            "peak_above_graph_mb": _peak_mb() - rss0}


def run_child(kind: str, args: dict, timeout: float | None = None) -> dict:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "BENCH_TORCH_THREADS": str(TORCH_THREADS)}
    p = subprocess.run([sys.executable, __file__, "--_child", kind, json.dumps(args)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------
def dense_estimate_gb(graph_folder: str, in_features: int) -> float:
    import pandas as pd

    from graphnet.backend import dense_training_bytes

    nodes = pd.read_parquet(Path(graph_folder) / "nodes.parquet", columns=["cell_type"])
    n = [int(nodes["cell_type"].isin(l.cell_types).sum()) for l in volume_spec("dense").layers]
    pairs = list(zip(n[:-1], n[1:])) + [(k, k) for k in n]
    return (sum(dense_training_bytes(b, a) for a, b in pairs) + 5 * 4 * in_features * n[0]) / 2**30


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fmt(v, nd=1) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(res: dict) -> str:
    c = res["config"]
    lines = [f"Volume surrogate, fraction {c['fraction']} of {c['cells_label']}, seed {c['seed']}; "
             f"{c['machine']}; {c['workers']} Dask workers x 1 thread. Times are wall seconds on a machine "
             f"shared with other jobs (1-min load average when each phase started: build "
             f"{res.get('build', {}).get('load', '?')}, model {res.get('model', {}).get('load', '?')}).", ""]
    b = res.get("build", {})
    if b:
        lines += ["| build (engine) | cells | synapses (rows) | partitions | connected pairs | generate s | "
                  "aggregate s | total s | driver peak MB | worker peak MB |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k in ("local", "dask"):
            if k in b and isinstance(b[k], dict):
                r = b[k]
                lines.append(f"| generate + aggregate ({k}) | {fmt(r['cells'])} | {fmt(r['synapses'])} | "
                             f"{fmt(r['partitions'])} | {fmt(r['edges'])} | {fmt(r['generate_s'])} | "
                             f"{fmt(r['aggregate_s'])} | {fmt(r['total_s'])} | {fmt(r['driver_peak_mb'], 0)} | "
                             f"{fmt(r.get('worker_peak_mb'), 0)} |")
        for k in ("local", "dask"):
            r = b.get(f"aggregate_{k}")
            if r:
                extra = f" (+{r['cluster_start_s']:.1f} s cluster start)" if "cluster_start_s" in r else ""
                lines.append(f"| aggregate cached partitions ({k}){extra} | | {fmt(r['synapses'])} | | "
                             f"{fmt(r['edges'])} | | {fmt(r['aggregate_s'])} | {fmt(r['process_s'])} | "
                             f"{fmt(r['driver_peak_mb'], 0)} | {fmt(r.get('worker_peak_mb'), 0)} |")
        if "identical" in b:
            lines += ["", f"Dask edges identical to local edges: **{b['identical']}** ({b['identical_how']})."]
        lines.append("")
    m = res.get("model", {})
    if m:
        lines += [f"Compiled column over every excitatory cell (batch {c['batch']}, in_features "
                  f"{c['in_features']}, float32, CPU, {c['torch_threads']} torch threads):", "",
                  "| volume fraction | backend | units A/B/C/D | connectome edges | parameters | compile s | "
                  "fwd+bwd s/batch | loss first -> last | peak MB (above graph) |",
                  "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
        for key in sorted(k for k in m if k != "load"):
            r = m[key]
            frac, backend = key.split("/")
            if "skipped" in r:
                lines.append(f"| {frac} | {backend} | | | | | skipped: {r['skipped']} | | |")
                continue
            u = "/".join(fmt(v) for v in r["units"].values())
            lines.append(f"| {frac} | {backend} | {u} | {fmt(r['connectome_edges'])} | {fmt(r['parameters'])} | "
                         f"{fmt(r['compile_s'])} | {fmt(r['fwd_bwd_s'], 3)} | {r['loss_first']:.3f} -> "
                         f"{r['loss_last']:.3f} ({r['steps']} steps) | {fmt(r['peak_mb'], 0)} "
                         f"({fmt(r['peak_above_graph_mb'], 0)}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default=None)
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--phases", nargs="+", default=["build", "model"], choices=["build", "model"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--in-features", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate of the training steps")
    p.add_argument("--dense-fraction", type=float, default=0.2)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads in the model runs (default 1: on a shared 2-core machine 2 threads "
                        "oversubscribe and time worse)")
    p.add_argument("--mem-budget-gb", type=float, default=8.0)
    p.add_argument("--keep", action="store_true", help="keep the generated caches (bench/out/volume_cache)")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        kind, args = a._child
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
        fn = {"build": child_build, "aggregate": child_aggregate, "model": child_model}[kind]
        print(json.dumps(fn(json.loads(args))))
        return 0

    global TORCH_THREADS
    TORCH_THREADS = a.torch_threads
    OUT.mkdir(parents=True, exist_ok=True)
    cells = a.cells
    label = cells
    if cells is None:
        if REAL_CELLS.exists():
            cells, label = str(REAL_CELLS), f"the {REAL_ROWS:,} real excitatory cells (cells_no_repeats.csv)"
        else:
            from connectomics.sources.volume import synthetic_cell_table

            cells = str(OUT / "volume_synthetic_cells.csv")
            synthetic_cell_table(REAL_ROWS, seed=0, width_um=(1300.0, 500.0)).to_csv(cells)
            label = f"{REAL_ROWS:,} synthetic excitatory cells (../shared absent)"
    store = OUT / "volume.json"
    allres = json.loads(store.read_text()) if store.exists() else {}
    key = f"{a.fraction:g}"
    res = allres.setdefault(key, {})
    res["config"] = {"fraction": a.fraction, "cells_label": label, "seed": a.seed, "workers": a.workers,
                     "batch": a.batch, "in_features": a.in_features, "torch_threads": a.torch_threads,
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    cache_root = OUT / "volume_cache" / key
    base = {"cells": cells, "seed": a.seed, "fraction": a.fraction, "workers": a.workers}
    graph = None

    if "build" in a.phases:
        b = res["build"] = {"load": f"{os.getloadavg()[0]:.1f}"}
        for engine in ("local", "dask"):
            shutil.rmtree(cache_root / engine, ignore_errors=True)
            print(f"build ({engine}) ...", flush=True)
            b[engine] = run_child("build", {**base, "engine": engine, "cache": str(cache_root / engine)})
        graph = b["local"]["graph"]
        ga, gb = Path(b["local"]["graph"]), Path(b["dask"]["graph"])
        if sha(ga / "edges.parquet") == sha(gb / "edges.parquet"):
            b["identical"], b["identical_how"] = True, "edges.parquet files byte-identical"
        else:
            import pandas as pd

            x, y = pd.read_parquet(ga / "edges.parquet"), pd.read_parquet(gb / "edges.parquet")
            b["identical"] = bool(x.equals(y))
            b["identical_how"] = "edge tables compared with DataFrame.equals"
        version = ga.parent.name[1:]
        for engine in ("local", "dask"):
            print(f"aggregate cached partitions ({engine}) ...", flush=True)
            b[f"aggregate_{engine}"] = run_child("aggregate", {
                **base, "engine": engine, "cache_root": str(cache_root / "local"), "version": version,
                "graph": graph})
        shutil.rmtree(cache_root / "dask", ignore_errors=True)
        allres[key] = res
        store.write_text(json.dumps(allres, indent=1))

    if "model" in a.phases:
        graph = graph or res.get("build", {}).get("local", {}).get("graph")
        if not graph or not Path(graph).exists():
            print("model: no volume graph at this fraction; run --phases build first", file=sys.stderr)
            return 1
        m = res["model"] = {"load": f"{os.getloadavg()[0]:.1f}"}
        runs = [(a.fraction, graph)]
        if a.dense_fraction and a.dense_fraction < a.fraction:
            small = cache_root / "small"
            shutil.rmtree(small, ignore_errors=True)
            print(f"build a {a.dense_fraction:g} volume for the dense comparison ...", flush=True)
            r = run_child("build", {**base, "fraction": a.dense_fraction, "engine": "local", "cache": str(small)})
            runs.insert(0, (a.dense_fraction, r["graph"]))
        margs = {"batch": a.batch, "in_features": a.in_features, "steps": a.steps, "lr": a.lr}
        for frac, g in runs:
            for backend in ("sparse", "dense"):
                k = f"{frac:g}/{backend}"
                if backend == "dense":
                    est = dense_estimate_gb(g, a.in_features)
                    if est > a.mem_budget_gb:
                        m[k] = {"skipped": f"dense masks need ~{est:.1f} GB to train "
                                           f"(> --mem-budget-gb {a.mem_budget_gb:g})"}
                        continue
                print(f"model {k} ...", flush=True)
                m[k] = run_child("model", {**margs, "graph": g, "backend": backend})
        allres[key] = res
        store.write_text(json.dumps(allres, indent=1))

    if not a.keep:
        # keep only the graph folders (needed by --phases model); drop the synapse partitions
        for parts in cache_root.glob("*/volume/*/synapses_pni_2"):
            shutil.rmtree(parts, ignore_errors=True)
    md = markdown(res)
    print(md)
    (OUT / "volume.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
