"""Tables -> cells -> graphs: the whole build, shared by the CLI, notebooks and training.

``build_graph(source, cache_root)`` pulls (or reads from the cache) the column's tables, assembles
the cells, aggregates the synapses and writes the neuron-level and cell-type graphs to
``<cache>/<namespace>/v<version>/graph/`` (or ``out``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .aggregate import aggregate_synapses
from .cache import TableCache
from .cells import assemble_cells
from .graph import ConnectomeGraph, load_graph
from .layers import LayerBounds
from .pull import pull_column_tables
from .schema import COLUMN_TABLES, SYNAPSE_TABLE
from .sources.base import Source
from .stats import density, ei_connection_probability

DEFAULT_CACHE = "data_cache"


def make_source(kind: str = "surrogate", *, path: str | None = None, version: int = 1300, seed: int = 0,
                datastack: str = "minnie65_public", auth_token: str | None = None,
                token_file: str | None = None, fraction: float = 1.0) -> Source:
    """A source by name: ``surrogate`` (seeded), ``cave`` (datastack at ``version``), ``snapshot PATH``,
    ``volume`` (``path`` = the cell table, ``seed``, ``fraction``; see :mod:`connectomics.volume`)."""
    if kind == "surrogate":
        from .sources.surrogate import SurrogateSource

        return SurrogateSource(seed=seed)
    if kind == "snapshot":
        if not path:
            raise ValueError("--source snapshot needs a PATH: --source snapshot DIR")
        from .sources.snapshot import SnapshotSource

        return SnapshotSource(path, datastack=datastack, version=version)
    if kind == "cave":
        from .sources.cave import CaveSource

        return CaveSource(datastack=datastack, version=version, auth_token=auth_token,
                          auth_token_file=token_file)
    if kind == "volume":
        if not path:
            raise ValueError("--source volume needs a cell table: --cells PATH")
        from .volume import VolumeSource

        return VolumeSource(path, seed=seed, fraction=fraction)
    raise ValueError(f"unknown source {kind!r}: use surrogate, cave, snapshot PATH or volume")


@dataclass
class BuildResult:
    graph: ConnectomeGraph
    folder: Path
    cache: TableCache
    from_cache: bool


def build_graph(source: Source, cache_root: str | Path = DEFAULT_CACHE, *, out: str | Path | None = None,
                refresh: bool = False, progress: bool = True,
                bounds: LayerBounds | None = None) -> BuildResult:
    """Pull the tables of ``source`` (cached), build both graphs and write them (see module doc)."""
    cache = TableCache(cache_root, source.namespace, source.version)
    had_all = not refresh and all(cache.has(t) for t in COLUMN_TABLES)
    tables = pull_column_tables(source, cache, refresh=refresh, progress=progress)
    nodes = assemble_cells(tables, bounds)
    synapses = tables[SYNAPSE_TABLE]
    edges = aggregate_synapses([synapses], nodes["root_id"].to_numpy(), progress=False)
    meta = {
        **source.describe(),
        "cache": str(cache.dir),
        "layer_bounds_um": list((bounds or LayerBounds()).bounds_um),
        "n_cells": int(len(nodes)),
        "n_synapses": int(edges["n_synapses"].sum()),
        "n_edges": int(len(edges)),
        "manifest": {t: {k: e[k] for k in ("sha256", "rows", "created")} for t, e in cache.manifest().items()},
    }
    graph = ConnectomeGraph(nodes=nodes, edges=edges, meta=meta)
    folder = Path(out) if out else cache.dir / "graph"
    graph.save(folder)
    return BuildResult(graph=graph, folder=folder, cache=cache, from_cache=had_all)


def build_default_graph(cache_root: str | Path = DEFAULT_CACHE, seed: int = 0,
                        progress: bool = False) -> ConnectomeGraph:
    """The embedded default (surrogate column of ``seed``): loaded if built, else built now."""
    folder = Path(cache_root) / "surrogate" / f"v{seed}" / "graph"
    if (folder / "nodes.parquet").exists():
        return load_graph(folder)
    from .sources.surrogate import SurrogateSource

    return build_graph(SurrogateSource(seed=seed), cache_root, progress=progress).graph


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
