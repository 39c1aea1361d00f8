"""Tables -> cells -> graphs: the whole build, shared by the CLI, notebooks and training.

``build_graph(source, cache_root, engine=...)`` is the one build path: the source (by name:
:func:`~connectomics.sources.make_source`) pulls (or reads from the cache) its tables
(:meth:`~connectomics.sources.base.Source.pull_tables`), the cells are assembled, the synapse
files aggregated by the ``local`` or ``dask`` engine (:mod:`connectomics.dask_engine`), and the
neuron-level and cell-type graphs written to :func:`graph_folder`
(``<cache>/<namespace>/v<cache_version>/graph/``) or ``out``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cache import CacheError, TableCache
from .cells import assemble_cells
from .graph import ConnectomeGraph, load_graph
from .layers import LayerBounds
from .sources import SOURCES, make_source
from .sources.base import Source
from .stats import density, ei_connection_probability

logger = logging.getLogger(__name__)

DEFAULT_CACHE = "data_cache"
#: The sources :func:`build_default_graph` builds: offline, deterministic, needing no input.
DEFAULT_SOURCES = ("column", "surrogate")

__all__ = ["DEFAULT_CACHE", "DEFAULT_SOURCES", "SOURCES", "BuildResult", "build_default_graph", "build_graph",
           "graph_folder", "make_source", "summary"]


def graph_folder(source: Source, cache_root: str | Path = DEFAULT_CACHE) -> Path:
    """Where :func:`build_graph` writes the graphs of ``source`` unless told otherwise:
    ``<cache_root>/<namespace>/v<cache_version>/graph``, beside the source's cached tables."""
    return TableCache(cache_root, source.namespace, source.cache_version).dir / "graph"


@dataclass
class BuildResult:
    graph: ConnectomeGraph
    folder: Path
    cache: TableCache
    from_cache: bool


def build_graph(source: Source, cache_root: str | Path = DEFAULT_CACHE, *, engine: str = "local",
                scheduler: str | None = None, n_workers: int = 2, out: str | Path | None = None,
                refresh: bool = False, progress: bool = True, bounds: LayerBounds | None = None,
                keep_unknown_types: bool = False) -> BuildResult:
    """Pull the tables of ``source`` (cached), build both graphs and write them (see module doc).

    ``engine``: ``local`` aggregates the synapse files in this process, ``dask`` on a Dask
    cluster (``scheduler`` address, else a ``LocalCluster`` of ``n_workers``), see
    :mod:`connectomics.dask_engine`; both give the same edges bit for bit. The source decides how
    its tables get into the cache (:meth:`Source.pull_tables`). ``meta["timings"]`` records the
    seconds of each step and peak memory (MB) of this process and, with ``dask``, of each worker.
    ``keep_unknown_types``: keep cell-type labels outside the MICrONS vocabularies as-is
    (:func:`connectomics.cells.assemble_cells`) instead of refusing them.
    """
    from .dask_engine import ENGINES, aggregate_dask, aggregate_local, dask_client, peak_rss_mb

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use local or dask")
    if scheduler and engine != "dask":
        raise ValueError("--scheduler needs --engine dask")
    cache = TableCache(cache_root, source.namespace, source.cache_version)
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(dask_client(scheduler, n_workers=n_workers)) if engine == "dask" else None
        t0 = time.perf_counter()
        tables, files, had_all = source.pull_tables(cache, refresh=refresh, progress=progress, client=client)
        timings["tables_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        nodes = assemble_cells(tables, bounds, keep_unknown_types=keep_unknown_types or source.own_vocabulary)
        nodes = source.adjust_nodes(nodes, bounds or LayerBounds())
        roots = nodes["root_id"].to_numpy()
        if engine == "dask":
            edges = aggregate_dask(files, roots, client)
            workers = client.run(peak_rss_mb)
            timings["worker_peak_mb"] = max(workers.values()) if workers else 0.0
        else:
            edges = aggregate_local(files, roots, progress=progress and len(files) > 1)
        timings["aggregate_s"] = time.perf_counter() - t0
    meta = {
        **source.describe(), "engine": engine,
        "scheduler": scheduler or ("LocalCluster" if engine == "dask" else None),
        "cache": str(cache.dir), "layer_bounds_um": list((bounds or LayerBounds()).bounds_um),
        "n_cells": int(len(nodes)), "n_synapses": int(edges["n_synapses"].sum()), "n_edges": int(len(edges)),
        "n_edges_without_size": int(edges["summed_size"].isna().sum()),  # count-only sources: NaN
        "synapse_files": len(files),
        "manifest": {t: {k: e[k] for k in ("sha256", "rows", "created")} for t, e in cache.manifest().items()
                     if "/" not in t},
    }
    graph = ConnectomeGraph(nodes=nodes, edges=edges, meta=meta)
    folder = Path(out) if out else graph_folder(source, cache_root)
    t0 = time.perf_counter()
    _ = graph.type_graph
    timings["type_graph_s"] = time.perf_counter() - t0
    timings["driver_peak_mb"] = peak_rss_mb()
    meta["timings"] = {k: round(v, 3) for k, v in timings.items()}
    graph.save(folder)
    return BuildResult(graph=graph, folder=folder, cache=cache, from_cache=had_all)


def build_default_graph(cache_root: str | Path = DEFAULT_CACHE, seed: int = 0,
                        progress: bool = False, source: str = "column") -> ConnectomeGraph:
    """The default graph, loaded if built, else built now: ``source="column"`` the bundled real
    MICrONS V1 column (``seed`` unused), ``"surrogate"`` the surrogate column of ``seed`` (the
    :data:`DEFAULT_SOURCES`, which need no input). A built graph that fails
    :func:`~connectomics.graph.load_graph`'s checks is rebuilt (with its tables)."""
    if source not in DEFAULT_SOURCES:
        raise ValueError(f"default graph source {source!r}: use {' or '.join(DEFAULT_SOURCES)}")
    src = make_source(source, seed=seed)
    folder = graph_folder(src, cache_root)
    if not (folder / "nodes.parquet").exists():
        return build_graph(src, cache_root, progress=progress).graph
    try:
        return load_graph(folder)
    except CacheError as e:
        logger.warning("%s; rebuilding the default graph", e)
    try:
        return build_graph(src, cache_root, progress=progress).graph
    except CacheError as e:   # its tables are damaged too: offline and deterministic, made again
        logger.warning("%s; making the default graph's tables again", e)
        return build_graph(src, cache_root, progress=progress, refresh=True).graph


def summary(graph: ConnectomeGraph) -> str:
    """A printable summary: cells per type and layer, synapses, connection density."""
    n = graph.n_nodes
    tab = pd.crosstab(graph.nodes["cell_type"], graph.nodes["layer"], margins=True, margins_name="all")
    e = graph.edges
    lines = [
        f"source: {graph.meta.get('source', '?')}  datastack: {graph.meta.get('datastack', '?')}  "
        f"version: {graph.meta.get('version', '?')}",
        f"cells: {n}  ({int((graph.nodes['ei'] == 'E').sum())} E, {int((graph.nodes['ei'] == 'I').sum())} I)",
        f"synapses: {int(e['n_synapses'].sum())}  connected pairs: {len(e)}  "
        f"density: {density(graph):.4f}  synapses/connection: "
        f"{(e['n_synapses'].sum() / max(len(e), 1)):.2f}",
        "",
        "cells per type (rows) and layer (columns):",
        tab.to_string(),
    ]
    lines += ["", "connection probability by class: " + "  ".join(
        f"{k} {p:.4f}" for k, p in ei_connection_probability(graph).items() if not math.isnan(p))]
    return "\n".join(lines)
