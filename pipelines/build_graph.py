"""Build the column's graphs: ``python -m pipelines.build_graph [options]``.

    python -m pipelines.build_graph                                  # embedded default (surrogate, seed 0)
    python -m pipelines.build_graph --source cave --version 1300     # real MICrONS pull (CAVE token)
    python -m pipelines.build_graph --source snapshot DIR            # static table dumps

Writes the Parquet cache (``--cache``, default ``data_cache``) with its manifest, the graph files
(``<cache>/<namespace>/v<version>/graph/`` or ``--out``) and prints a summary. Any error exits
non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.build_graph", description=__doc__.split("\n")[0])
    p.add_argument("--source", nargs="+", default=["surrogate"], metavar="KIND [PATH]",
                   help="surrogate (default) | cave | snapshot PATH")
    p.add_argument("--version", type=int, default=1300, help="CAVE materialization version (default 1300)")
    p.add_argument("--datastack", default="minnie65_public")
    p.add_argument("--seed", type=int, default=0, help="surrogate seed (default 0)")
    p.add_argument("--cache", default="data_cache", help="cache root (default data_cache)")
    p.add_argument("--out", default=None, help="graph folder (default <cache>/<namespace>/v<version>/graph)")
    p.add_argument("--refresh", action="store_true", help="pull again even if cached")
    p.add_argument("--token-file", default=None, help="file holding a CAVE token (else caveclient's own)")
    p.add_argument("--plots", action="store_true", help="also write PNG plots of the graph")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    kind = args.source[0]
    if kind not in ("surrogate", "cave", "snapshot"):
        p.error(f"--source: unknown kind {kind!r} (surrogate, cave, snapshot PATH)")
    if kind == "snapshot" and len(args.source) != 2:
        p.error("--source snapshot needs a PATH")
    if kind != "snapshot" and len(args.source) != 1:
        p.error(f"--source {kind} takes no PATH")
    args.kind, args.path = kind, (args.source[1] if len(args.source) > 1 else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from connectomics.build import build_graph, make_source, summary

        t0 = time.perf_counter()
        source = make_source(args.kind, path=args.path, version=args.version, seed=args.seed,
                             datastack=args.datastack, token_file=args.token_file)
        res = build_graph(source, args.cache, out=args.out, refresh=args.refresh, progress=not args.quiet)
        print(summary(res.graph))
        if args.plots:
            from connectomics.plot import save_graph_plots

            for path in save_graph_plots(res.graph, res.folder / "plots"):
                print(f"plot: {path}")
        print(f"\ncache: {res.cache.dir} ({'read from cache' if res.from_cache else 'pulled'})")
        print(f"graph: {res.folder}  ({time.perf_counter() - t0:.1f} s)")
        return 0
    except KeyboardInterrupt:
        print("build_graph: interrupted (finished batches are kept and resumed next run)", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line, no traceback
        print(f"build_graph: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
