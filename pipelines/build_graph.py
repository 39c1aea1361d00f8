"""Build the column's graphs: ``python -m pipelines.build_graph [options]``.

    python -m pipelines.build_graph                                  # the real MICrONS V1 column (bundled, offline)
    python -m pipelines.build_graph --source surrogate               # the synthetic column (seed 0)
    python -m pipelines.build_graph --source cave --version 1300     # real MICrONS pull (CAVE token)
    python -m pipelines.build_graph --source cave --datastack minnie65_public --cell-types 23P,4P \
        --depth 100 400 --proofread axon                             # a population query (CAVE token)
    python -m pipelines.build_graph --source cave --query QUERY.json # the same, saved (--save-query)
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
    p.add_argument("--version", type=int, default=None,
                   help="CAVE materialization version (default 1300; with a population query the profile's)")
    p.add_argument("--datastack", default=None,
                   help="CAVE datastack, also the population query's profile (default minnie65_public)")
    q = p.add_argument_group("population query (--source cave; connectomics.sources.population)")
    q.add_argument("--query", default=None, metavar="FILE", help="a saved query (JSON); the options below override it")
    q.add_argument("--save-query", default=None, metavar="FILE", help="write the query to FILE (JSON) before the pull")
    q.add_argument("--cell-table", default=None, help="cell table (default: the profile's cell-type table)")
    q.add_argument("--cell-types", default=None, metavar="T1,T2", help="cell types (the table's cell_type)")
    q.add_argument("--classification-systems", default=None, metavar="S1,S2",
                   help="classification systems (the table's classification_system)")
    q.add_argument("--mtypes", default=None, metavar="M1,M2", help="m-types (the profile's m-type table)")
    q.add_argument("--filter", action="append", default=None, metavar="COLUMN=V1,V2",
                   help="keep rows whose COLUMN of the cell table is one of the values (repeatable)")
    q.add_argument("--proofread", nargs="+", default=None, metavar="COMPARTMENT[=STRATEGY,...]",
                   help="axon and/or dendrite: status true, or (with =) strategy one of the values, "
                        "e.g. --proofread axon dendrite=dendrite_clean,dendrite_extended")
    q.add_argument("--bbox", type=float, nargs=6, default=None, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                   help="box in nm (positions at 1 nm), each axis [lo, hi)")
    q.add_argument("--depth", type=float, nargs=2, default=None, metavar=("TOP", "BOTTOM"),
                   help="depth below the pia in um (the datastack's standard-transform frame), [top, bottom)")
    q.add_argument("--radius", type=float, default=None, metavar="UM",
                   help="cylinder radius in um around --center X Z (standard-transform frame)")
    q.add_argument("--center", type=float, nargs=2, default=None, metavar=("X", "Z"), help="cylinder axis, um")
    q.add_argument("--limit", type=int, default=None, help="a random subset of N cells (seeded by --seed)")
    q.add_argument("--outside-inputs", choices=("drop", "counts"), default=None,
                   help="synapses from cells outside the population: drop (default) or keep as counts per "
                        "cell and presynaptic type")
    q.add_argument("--batch-size", type=int, default=None, help="cave: root ids per request (default 500)")
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
    args.population = any(getattr(args, k) is not None for k in QUERY_OPTIONS)
    if args.population and kind != "cave":
        p.error("population query options (--query, --cell-types, --depth, ...) are for --source cave")
    if (args.radius is None) != (args.center is None):
        p.error("--radius and --center go together")
    return args


#: options that make a population query (their ``args`` names)
QUERY_OPTIONS = ("query", "save_query", "cell_table", "cell_types", "classification_systems", "mtypes", "filter",
                 "proofread", "bbox", "depth", "radius", "limit", "outside_inputs")


def population_query(args: argparse.Namespace):
    """The :class:`~connectomics.sources.population.PopulationQuery` of the options (over
    ``--query``'s file); a bad value is a QueryError naming the option."""
    from connectomics.sources.population import PopulationQuery, QueryError

    data = PopulationQuery.load(args.query).to_dict() if args.query else {}
    if args.datastack:
        data["datastack"] = args.datastack
    if args.version is not None:
        data["version"] = args.version
    for name in ("cell_table", "cell_types", "classification_systems", "mtypes", "limit", "outside_inputs"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if args.limit is not None:
        data["seed"] = args.seed
    if args.filter:
        filters = dict(data.get("filters") or {})
        for item in args.filter:
            col, eq, values = item.partition("=")
            if not eq or not col.strip() or not values.strip():
                raise QueryError(f"--filter {item!r}: give COLUMN=V1,V2")
            filters[col.strip()] = values
        data["filters"] = filters
    if args.proofread:
        proof = {}
        for item in args.proofread:
            comp, _, values = item.partition("=")
            proof[comp.strip()] = values
        data["proofread"] = proof
    if args.bbox:
        data["bbox_nm"] = [args.bbox[:3], args.bbox[3:]]
    if args.depth:
        data["depth_um"] = args.depth
    if args.radius is not None:
        data["radius_um"], data["center_um"] = args.radius, args.center
    return PopulationQuery.from_dict(data, origin=args.query or "population query")


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
        query = population_query(args) if args.population else None
        if query is not None and args.save_query:
            print(f"query: {query.save(args.save_query)}")
        source = make_source(args.kind, path=args.path, version=args.version or 1300, seed=args.seed,
                             datastack=args.datastack or "minnie65_public", token_file=args.token_file,
                             fraction=args.fraction, resolution_nm=tuple(args.resolution) if args.resolution else None,
                             query=query, batch_size=args.batch_size)
        res = build_graph(source, args.cache_root, engine=args.engine, scheduler=args.scheduler,
                          n_workers=args.workers, out=args.out, refresh=args.refresh, progress=not args.quiet,
                          keep_unknown_types=args.keep_unknown_types)
        print(summary(res.graph))
        if query is not None:
            pop = res.graph.meta.get("population", {})
            print(f"\npopulation query {res.graph.meta.get('query_key')}: "
                  + ", ".join(f"{k} {v}" for k, v in pop.get("funnel", {}).items()))
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
