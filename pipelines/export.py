"""Export a graph to the field's tools: ``python -m pipelines.export {sonata,neuroglancer} ...``.

    python -m pipelines.export sonata --out circuits/v1_column [--graph DIR] [--population NAME]
    python -m pipelines.export sonata --run runs/paper-s1 --out circuits/paper-s1 [--checkpoint best]
    python -m pipelines.export neuroglancer --population "4P|L4" [--graph DIR] [--json FILE]
    python -m pipelines.export neuroglancer --types 4P 23P
    python -m pipelines.export neuroglancer --ids 864691135001579617 864691135001948818

``--graph DIR`` is a folder written by ``python -m pipelines.build_graph``; without it the
toolkit's default graph is used (built into ``--cache`` on first use). ``sonata`` writes the
circuit (see :mod:`connectomics.export.sonata`) and prints its files and sizes; with ``--run`` the
circuit is a trained run's column: the run's cells, the connections its column compiled (null
model applied) and each connection's effective weight as SONATA's ``syn_weight``, so the trained
column can be simulated in BMTK or NEST; ``neuroglancer``
prints the link (and writes the state JSON with ``--json``). Any error exits non-zero with one
line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)   # accepted before or after the subcommand
    common.add_argument("--graph", default=argparse.SUPPRESS, metavar="DIR",
                        help="graph folder (default: the default graph)")
    common.add_argument("--cache", default=argparse.SUPPRESS,
                        help="cache root for the default graph (default data_cache)")
    p = argparse.ArgumentParser(prog="python -m pipelines.export", description=__doc__.split("\n")[0],
                                parents=[common])
    sub = p.add_subparsers(dest="format", required=True)
    s = sub.add_parser("sonata", help="write a SONATA circuit", parents=[common])
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the circuit files")
    s.add_argument("--population", default="microns", help="node population name (default microns)")
    s.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="export a trained run's column with its effective weights as syn_weight")
    s.add_argument("--checkpoint", default="best", help="with --run: best | final | last (default best)")
    s.add_argument("--chunk-edges", type=int, default=250_000, help="edges written per chunk")
    s.add_argument("--compression", choices=("none", "gzip"), default="none",
                   help="HDF5 compression (default none: libsonata's wheel cannot read gzip)")
    n = sub.add_parser("neuroglancer", help="print a Neuroglancer link of selected cells", parents=[common])
    sel = n.add_mutually_exclusive_group(required=True)
    sel.add_argument("--population", help='one population "<cell_type>|<layer>", e.g. "4P|L4"')
    sel.add_argument("--types", nargs="+", metavar="TYPE", help="cell types, e.g. 4P 23P")
    sel.add_argument("--ids", nargs="+", type=int, metavar="ROOT_ID", help="root ids")
    n.add_argument("--version", type=int, default=None, help="materialization (default: the graph's)")
    n.add_argument("--json", default=None, metavar="FILE", help="also write the state JSON here")
    n.add_argument("--target-url", default=None, help="Neuroglancer deployment (default spelunker)")
    args = p.parse_args(argv)
    args.graph = getattr(args, "graph", None)
    args.cache = getattr(args, "cache", "data_cache")
    if args.format == "sonata" and args.chunk_edges < 1:
        p.error("--chunk-edges must be >= 1")
    return args


def _load(args: argparse.Namespace):
    if args.graph:
        from connectomics import load_graph

        return load_graph(args.graph)
    from connectomics.build import build_default_graph

    return build_default_graph(cache_root=args.cache)


def trained_circuit(run: str, checkpoint: str = "best"):
    """The graph of a trained run's column: the run's cells (nodes), the connections its column
    compiled (edges, null model applied) with ``n_synapses``, ``summed_size`` and ``syn_weight``
    (the effective weight the trained column applies)."""
    from connectomics.graph import ConnectomeGraph

    from .evaluate import load_run_model
    from .models import load_run_graph
    from .run_dir import RunDir

    model, cfg, _ = load_run_model(run, checkpoint)
    if cfg.model != "bionic":
        raise ValueError(f"--run {run}: model {cfg.model!r} has no connectome column to export")
    graph = load_run_graph(RunDir(run), cfg)
    table = model.column.connection_table()
    root = graph.nodes["root_id"].to_numpy()
    pre, post = table["pre"].to_numpy(np.int64), table["post"].to_numpy(np.int64)
    edges = pd.DataFrame({"pre": pre, "post": post, "pre_root_id": root[pre], "post_root_id": root[post],
                          "n_synapses": table["n_synapses"].to_numpy(), "summed_size": table["summed_size"].to_numpy(),
                          "syn_weight": table["weight"].to_numpy()})
    meta = {**graph.meta, "trained_run": str(run), "checkpoint": checkpoint}
    return ConnectomeGraph(nodes=graph.nodes, edges=edges, meta=meta)


def _sonata(graph, args: argparse.Namespace) -> None:
    from connectomics.export import to_sonata

    res = to_sonata(graph, args.out, population=args.population, chunk_edges=args.chunk_edges,
                    compression=None if args.compression == "none" else args.compression)
    sizes = res.sizes()
    print(f"SONATA circuit: {res.n_nodes} nodes ({res.node_population}), {res.n_edges} edges "
          f"({res.edge_population}) in {res.seconds:.1f} s")
    for name, path in res.files.items():
        print(f"  {path}  {sizes[name] / 1e6:.2f} MB")


def _neuroglancer(graph, args: argparse.Namespace) -> None:
    from connectomics.export import neuroglancer_state
    from connectomics.export.neuroglancer import DEFAULT_NEUROGLANCER_URL

    st = neuroglancer_state(graph, population=args.population, types=args.types, ids=args.ids,
                            version=args.version, target_url=args.target_url or DEFAULT_NEUROGLANCER_URL)
    if args.json:
        print(f"state JSON: {st.save_json(args.json)}  ({len(st.segments)} cells, v{st.version})",
              file=sys.stderr)
    print(st.url)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        t0 = time.perf_counter()
        if args.format == "sonata" and args.run:
            if args.graph:
                raise ValueError("--run exports the run's own graph; leave out --graph")
            graph = trained_circuit(args.run, args.checkpoint)
        else:
            graph = _load(args)
        if args.format == "sonata":
            _sonata(graph, args)
            print(f"total {time.perf_counter() - t0:.1f} s (graph load included)")
        else:
            _neuroglancer(graph, args)
        return 0
    except Exception as e:  # one clear line, no traceback
        print(f"export: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
