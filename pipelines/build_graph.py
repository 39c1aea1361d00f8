"""Build the column's graphs: ``python -m pipelines.build_graph [options]``.

    python -m pipelines.build_graph                                  # the real MICrONS V1 column (bundled, offline)
    python -m pipelines.build_graph --source surrogate               # the synthetic column (seed 0)
    python -m pipelines.build_graph --source cave --version 1300     # real MICrONS pull (CAVE token)
    python -m pipelines.build_graph --source snapshot DIR            # static table dumps
    python -m pipelines.build_graph --source volume --cells CELLS.csv [--fraction 0.1]   # whole-volume surrogate
    python -m pipelines.build_graph --source volume --cells CELLS.csv --engine dask [--scheduler ADDRESS]

Writes the Parquet cache (``--cache_root``, default ``data_cache``) with its manifest, the graph files
(``<cache>/<namespace>/v<version>/graph/`` or ``--out``) and prints a summary. A user error (a bad
option or file, a damaged cache, a source that cannot deliver) is one line on stderr and exit
status 2 (:func:`pipelines.errors.run_cli`); ``--debug`` shows its traceback. ``--engine dask`` aggregates (and, for ``volume``, generates) the
synapses on a Dask cluster: a 2-worker ``LocalCluster`` here, or the one at ``--scheduler ADDRESS``
(see :mod:`connectomics.dask_engine`).
"""

from __future__ import annotations

import argparse
import sys
import time

from .errors import UserError, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from connectomics.sources import SOURCES

    p = argparse.ArgumentParser(prog="python -m pipelines.build_graph", description=__doc__.split("\n")[0])
    p.add_argument("--source", nargs="+", default=["column"], metavar="KIND [PATH]",
                   help="column (default: the bundled real MICrONS V1 column) | surrogate | cave | "
                        "snapshot PATH | volume (with --cells)")
    p.add_argument("--cells", default=None, metavar="TABLE",
                   help="volume: typed soma table (CSV/Parquet: cell_type, pt_root_id, pt_x/y/z voxels)")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="volume: keep this seeded fraction of the table's cells (default 1)")
    p.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="aggregation engine (default local)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask: scheduler address (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="dask: LocalCluster workers (default 2)")
    p.add_argument("--resolution", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="snapshot: nm per position unit along x y z (default: each Parquet file's "
                        "dataframe_resolution, else 4 4 40 voxels)")
    p.add_argument("--version", type=int, default=1300, help="CAVE materialization version (default 1300)")
    p.add_argument("--datastack", default="minnie65_public")
    p.add_argument("--seed", type=int, default=0, help="surrogate seed (default 0)")
    p.add_argument("--cache_root", "--cache", dest="cache_root", default="data_cache", metavar="DIR",
                   help="cache root (default data_cache; --cache is its old spelling)")
    p.add_argument("--out", default=None, help="graph folder (default <cache_root>/<namespace>/v<version>/graph)")
    p.add_argument("--refresh", action="store_true", help="pull again even if cached (also recovers a corrupt cache)")
    p.add_argument("--token-file", default=None, help="file holding a CAVE token (else caveclient's own)")
    p.add_argument("--keep-unknown-types", action="store_true",
                   help="keep cell-type labels that are no MICrONS label as their own types (default: error)")
    p.add_argument("--plots", action="store_true", help="also write PNG plots of the graph")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    kind = args.source[0]
    if kind not in SOURCES:
        p.error(f"--source: unknown kind {kind!r} ({', '.join(SOURCES)}; snapshot with a PATH)")
    if kind == "volume" and not args.cells:
        p.error("--source volume needs --cells TABLE")
    if args.cells and kind != "volume":
        p.error("--cells is for --source volume")
    if args.resolution and kind != "snapshot":
        p.error("--resolution is for --source snapshot")
    if args.scheduler and args.engine != "dask":
        p.error("--scheduler needs --engine dask")
    if kind == "snapshot" and len(args.source) != 2:
        p.error("--source snapshot needs a PATH")
    if kind != "snapshot" and len(args.source) != 1:
        p.error(f"--source {kind} takes no PATH")
    args.kind, args.path = kind, (args.source[1] if len(args.source) > 1 else args.cells)
    return args


def _close_progress_bars() -> None:
    """Close the progress bars an exception left open, so the message starts on a fresh line (a
    bar inside a loop the exception left is only closed when its frame is collected)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli("build_graph", lambda: _build(args), debug=args.debug)


def _build(args: argparse.Namespace) -> int:
    from connectomics.cache import CacheError
    from connectomics.sources.base import SourceError

    try:
        from connectomics.build import build_graph, summary
        from connectomics.sources import make_source

        t0 = time.perf_counter()
        source = make_source(args.kind, path=args.path, version=args.version, seed=args.seed,
                             datastack=args.datastack, token_file=args.token_file, fraction=args.fraction,
                             resolution_nm=tuple(args.resolution) if args.resolution else None)
        res = build_graph(source, args.cache_root, engine=args.engine, scheduler=args.scheduler,
                          n_workers=args.workers, out=args.out, refresh=args.refresh, progress=not args.quiet,
                          keep_unknown_types=args.keep_unknown_types)
        print(summary(res.graph))
        if args.plots:
            from connectomics.plots import save_graph_plots

            for path in save_graph_plots(res.graph, res.folder / "plots"):
                print(f"plot: {path}")
        print(f"\ncache: {res.cache.dir} ({'read from cache' if res.from_cache else source.provenance})")
        print(f"graph: {res.folder}  ({time.perf_counter() - t0:.1f} s)")
        return 0
    except KeyboardInterrupt:
        _close_progress_bars()
        print("build_graph: interrupted (finished batches are kept and resumed next run)", file=sys.stderr)
        return 130
    except (SourceError, CacheError) as e:  # a source or cache the user must fix or pull again
        _close_progress_bars()
        if args.debug:
            raise
        raise UserError(str(e)) from e
    except BaseException:
        _close_progress_bars()
        raise


if __name__ == "__main__":
    sys.exit(main())
