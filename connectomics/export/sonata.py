"""A neuron-level graph as a SONATA circuit (the Allen/Blue Brain network format).

``to_sonata(graph, out)`` writes five files into ``out`` (SONATA developer guide, "Representing
networks of neurons"; HDF5 through h5py, each file written to a temporary name and renamed)::

    nodes.h5             /nodes/<population>/{node_type_id, node_group_id, node_group_index}
                         /nodes/<population>/0/<attribute>           one row per cell
    edges.h5             /edges/<population>_to_<population>/{source_node_id, target_node_id,
                         edge_type_id, edge_group_id, edge_group_index}, /0/<attribute>,
                         indices/{source_to_target, target_to_source}/{node_id_to_ranges,
                         range_to_edge_id}
    node_types.csv       one node type per (cell type, layer) population
    edge_types.csv       one edge type per sign: 100 excitatory, 101 inhibitory (presynaptic E/I)
    circuit_config.json  the two networks with paths relative to the config's folder

``circuit_config.json`` is written last: a folder without it holds an unfinished export.
Both HDF5 files carry the root attributes ``version = [0, 1]`` (uint32) and ``magic = 0x0A7A``.

Nodes
    node id = row of ``graph.nodes`` (0 .. N-1, also written as the ``node_id`` dataset, which
    BMTK requires). Group ``0`` holds, per node: ``cell_type``, ``mtype``, ``layer``, ``ei`` (str;
    ``""`` = missing), ``root_id``, ``nucleus_id`` (int64; ``-1`` = missing), ``x``, ``y``, ``z``
    (float64, soma position in µm in the CAVE frame = ``x_nm / 1000``, not rotated) and
    ``depth_um`` (float64, below the pia). A column the graph lacks is left out. The node type
    (``node_type_id`` = 100 + rank of ``"<cell_type>|<layer>"`` in sorted order) carries
    ``pop_name``, ``cell_type``, ``layer``, ``ei`` and ``model_type point_neuron`` with
    ``model_template NULL``: the export holds the wiring, not neuron models; a modeller sets the
    model per node type in ``node_types.csv``.

Edges
    one edge per connected ordered pair, **sorted by target node, then source node**. Group ``0``
    holds ``nsyns`` (int64, synapses in the connection; BMTK's name for it; float64 with NaN =
    unknown if any count is missing) and ``summed_size`` (float64, summed synapse size in the
    synapse table's voxel units; NaN = unknown; left out when no edge has one) and, when the edge
    table has a ``syn_weight`` column (a trained model's effective weights, written by
    ``python -m pipelines.export sonata --run RUN``), ``syn_weight`` (float64, SONATA's reserved
    name for the connection's weight: the signed weight the model applies). The edge type
    gives the sign of the presynaptic cell: ``synapse_class`` excitatory/inhibitory, ``sign``
    +1/-1, ``pre_ei`` E/I. The ``indices`` groups are laid out as libsonata's own
    ``EdgePopulation.write_indices`` lays them out (uint64; a node without edges gets the empty
    range ``[k, k]``); each target owns one contiguous range of edge ids. ``node_id_to_range``
    is a hard link to ``node_id_to_ranges`` (the spec's and libsonata's name): BMTK reads the
    singular name.

Memory: edge attributes are gathered and written ``chunk_edges`` rows at a time; beside the
graph the export holds the sort order (one int64 per edge) and the source index's runs (two
int64 per run, at most one run per edge), never a sorted copy of the edge table: about
24 bytes per edge plus about 100 bytes per chunk row (figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..atomic_io import atomic_path
from ..graph import ConnectomeGraph, node_populations

NODES_FILE = "nodes.h5"
EDGES_FILE = "edges.h5"
NODE_TYPES_FILE = "node_types.csv"
EDGE_TYPES_FILE = "edge_types.csv"
CONFIG_FILE = "circuit_config.json"
#: SONATA spec version written to the ``version`` root attribute and the ``magic`` number.
SONATA_VERSION = (0, 1)
SONATA_MAGIC = 0x0A7A
NODE_TYPE_ID_BASE = 100
EXCITATORY_EDGE_TYPE = 100
INHIBITORY_EDGE_TYPE = 101
#: Value written for a missing integer node attribute (nucleus id).
MISSING_INT = -1
#: node attribute -> (graph column, kind); kind "str", "int" or "um" (nm column / 1000)
NODE_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "cell_type": ("cell_type", "str"), "mtype": ("mtype", "str"), "layer": ("layer", "str"),
    "ei": ("ei", "str"), "root_id": ("root_id", "int"), "nucleus_id": ("nucleus_id", "int"),
    "x": ("x_nm", "um"), "y": ("y_nm", "um"), "z": ("z_nm", "um"), "depth_um": ("depth_um", "float"),
}
_H5_CHUNK = 1 << 16


@dataclass
class SonataExport:
    """Where :func:`to_sonata` wrote a circuit and what it holds."""

    folder: Path
    node_population: str
    edge_population: str
    n_nodes: int
    n_edges: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.files["circuit_config"]

    def sizes(self) -> dict[str, int]:
        """Bytes per written file."""
        return {name: path.stat().st_size for name, path in self.files.items()}


def _root_attributes(h5: h5py.File) -> None:
    h5.attrs.create("version", np.asarray(SONATA_VERSION, dtype=np.uint32))
    h5.attrs.create("magic", np.uint32(SONATA_MAGIC))


def _create(group: h5py.Group, name: str, n: int, dtype, compression: str | None) -> h5py.Dataset:
    """An (n,) dataset; chunked and compressed when it has rows to compress."""
    if n == 0 or compression is None:
        return group.create_dataset(name, shape=(n,), dtype=dtype)
    return group.create_dataset(name, shape=(n,), dtype=dtype, chunks=(min(n, _H5_CHUNK),),
                                compression=compression)


def _node_attribute(nodes: pd.DataFrame, name: str, kind: str) -> np.ndarray:
    s = nodes[name]
    if kind == "str":
        return s.astype(object).where(s.notna(), "").astype(str).to_numpy(dtype=object)
    if kind == "int":
        num = pd.to_numeric(s, errors="coerce")
        return num.fillna(MISSING_INT).to_numpy(dtype=np.int64)
    vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    return vals / 1000.0 if kind == "um" else vals


def _write_nodes(path: Path, graph: ConnectomeGraph, population: str, compression: str | None) -> pd.DataFrame:
    """Write ``nodes.h5``; return the node-type table (one row per population)."""
    nodes = graph.nodes
    code, keys = node_populations(nodes)
    n = len(nodes)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        _root_attributes(h5)
        pop = h5.create_group("nodes").create_group(population)
        pop.create_dataset("node_type_id", data=(code + NODE_TYPE_ID_BASE).astype(np.int64))
        pop.create_dataset("node_id", data=np.arange(n, dtype=np.int64))
        pop.create_dataset("node_group_id", data=np.zeros(n, dtype=np.int64))
        pop.create_dataset("node_group_index", data=np.arange(n, dtype=np.int64))
        grp = pop.create_group("0")
        for attr, (name, kind) in NODE_ATTRIBUTES.items():
            if name not in nodes.columns:
                continue
            vals = _node_attribute(nodes, name, kind)
            dtype = h5py.string_dtype("utf-8") if kind == "str" else vals.dtype
            _create(grp, attr, n, dtype, compression)[...] = vals
    first = nodes.groupby(code, sort=True).first()
    return pd.DataFrame({
        "node_type_id": np.arange(len(keys), dtype=np.int64) + NODE_TYPE_ID_BASE,
        "pop_name": keys,
        "cell_type": first["cell_type"].to_numpy(),
        "layer": first["layer"].to_numpy(),
        "ei": first["ei"].to_numpy() if "ei" in first else "",
        "model_type": "point_neuron",
        "model_template": "NULL",
    })


def _edge_attributes(edges: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-edge attribute arrays in the graph's edge order (see module docstring)."""
    out: dict[str, np.ndarray] = {}
    if "n_synapses" in edges.columns:
        col = edges["n_synapses"]
        if pd.api.types.is_integer_dtype(col):
            out["nsyns"] = col.to_numpy(dtype=np.int64)          # a view when already int64
        else:
            n = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
            out["nsyns"] = n if np.isnan(n).any() else n.astype(np.int64)
    if "summed_size" in edges.columns:
        size = pd.to_numeric(edges["summed_size"], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isnan(size).all():
            out["summed_size"] = size
    if "syn_weight" in edges.columns:
        out["syn_weight"] = pd.to_numeric(edges["syn_weight"], errors="coerce").to_numpy(dtype=np.float64)
    return out


def _write_edge_rows(pop: h5py.Group, pre: np.ndarray, post: np.ndarray, is_inhibitory: np.ndarray,
                     attrs: dict[str, np.ndarray], chunk: int,
                     compression: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Write the sorted edge datasets chunk by chunk.

    Returns the runs of equal source node ids in the written order (the source index's input):
    run_start (R,) first edge id of each maximal run, run_node (R,) its source node.
    """
    e = len(pre)
    order = np.lexsort((pre, post))          # by target, then source
    ds = {name: _create(pop, name, e, np.int64, compression) for name in
          ("source_node_id", "target_node_id", "edge_type_id", "edge_group_id", "edge_group_index")}
    grp = pop.create_group("0")
    attr_ds = {name: _create(grp, name, e, vals.dtype, compression) for name, vals in attrs.items()}
    starts: list[np.ndarray] = []
    nodes: list[np.ndarray] = []
    previous = -1                            # source of the edge before this chunk
    for s in range(0, e, chunk):
        idx = order[s:s + chunk]
        stop = s + len(idx)
        src = pre[idx]
        new_run = np.flatnonzero(src != np.concatenate([[previous], src[:-1]]))
        starts.append(new_run + s)
        nodes.append(src[new_run])
        previous = int(src[-1])
        ds["source_node_id"][s:stop] = src
        ds["target_node_id"][s:stop] = post[idx]
        ds["edge_type_id"][s:stop] = np.where(is_inhibitory[src], INHIBITORY_EDGE_TYPE, EXCITATORY_EDGE_TYPE)
        ds["edge_group_id"][s:stop] = 0
        ds["edge_group_index"][s:stop] = np.arange(s, stop, dtype=np.int64)
        for name, vals in attrs.items():
            attr_ds[name][s:stop] = vals[idx]
    idx = order = None                       # idx is a view: both must go to free the order
    return _concat_clearing(starts), _concat_clearing(nodes)


def _concat_clearing(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate int64 arrays, releasing each part once copied (peak = total + one part)."""
    out = np.empty(sum(len(p) for p in parts), dtype=np.int64)
    at = 0
    while parts:
        p = parts.pop(0)
        out[at:at + len(p)] = p
        at += len(p)
    return out


def _write_index(group: h5py.Group, run_node: np.ndarray, run_start: np.ndarray, n_edges: int,
                 n_nodes: int, chunk: int) -> None:
    """One ``indices/*`` group from runs of equal node ids in edge order.

    run_node, run_start (R,): node id and first edge id of each maximal run; runs are listed in
    edge order, a run ends where the next begins (the last at ``n_edges``).
    """
    per_node = np.bincount(run_node, minlength=n_nodes).astype(np.uint64)
    offsets = np.concatenate([[0], np.cumsum(per_node)]).astype(np.uint64)
    group.create_dataset("node_id_to_ranges", data=np.stack([offsets[:-1], offsets[1:]], axis=1))
    group["node_id_to_range"] = group["node_id_to_ranges"]   # hard link: BMTK's (singular) name
    by_node = np.argsort(run_node, kind="stable")
    n_runs = len(run_start)
    r2e = group.create_dataset("range_to_edge_id", shape=(n_runs, 2), dtype=np.uint64)
    for s in range(0, n_runs, chunk):
        k = by_node[s:s + chunk]
        end = np.where(k + 1 < n_runs, run_start[np.minimum(k + 1, n_runs - 1)], n_edges)
        r2e[s:s + len(k)] = np.stack([run_start[k], end], axis=1).astype(np.uint64)


def _write_indices(pop: h5py.Group, source_runs: tuple[np.ndarray, np.ndarray], post: np.ndarray,
                   n_nodes: int, chunk: int) -> None:
    """Both index groups; targets are contiguous (edges sorted by target), sources are runs."""
    e = len(post)
    idx = pop.create_group("indices")
    counts = np.bincount(post, minlength=n_nodes)
    has = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)])[has]
    _write_index(idx.create_group("target_to_source"), has, starts, e, n_nodes, chunk)
    run_start, run_node = source_runs
    _write_index(idx.create_group("source_to_target"), run_node, run_start, e, n_nodes, chunk)


def _write_edges(path: Path, graph: ConnectomeGraph, node_population: str, edge_population: str,
                 chunk: int, compression: str | None) -> None:
    edges, n = graph.edges, graph.n_nodes
    pre = edges["pre"].to_numpy(dtype=np.int64)
    post = edges["post"].to_numpy(dtype=np.int64)
    if "ei" in graph.nodes.columns:
        is_inhibitory = (graph.nodes["ei"] == "I").to_numpy()
    else:
        is_inhibitory = np.zeros(n, dtype=bool)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        _root_attributes(h5)
        pop = h5.create_group("edges").create_group(edge_population)
        source_runs = _write_edge_rows(pop, pre, post, is_inhibitory, _edge_attributes(edges), chunk,
                                       compression)
        for name in ("source_node_id", "target_node_id"):
            pop[name].attrs.create("node_population", node_population,
                                   dtype=h5py.string_dtype("utf-8"))
        _write_indices(pop, source_runs, post, n, chunk)


def _edge_types() -> pd.DataFrame:
    return pd.DataFrame({
        "edge_type_id": [EXCITATORY_EDGE_TYPE, INHIBITORY_EDGE_TYPE],
        "synapse_class": ["excitatory", "inhibitory"],
        "sign": [1, -1],
        "pre_ei": ["E", "I"],
        "model_template": ["NULL", "NULL"],
    })


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """SONATA CSV dialect: space-separated, fields with spaces double-quoted, UNIX newlines."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=" ", index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def circuit_config(node_population: str, edge_population: str) -> dict:
    """The ``circuit_config.json`` content; paths relative to the config's own folder."""
    return {
        "manifest": {"$NETWORK_DIR": "."},
        "components": {},
        "networks": {
            "nodes": [{
                "nodes_file": f"$NETWORK_DIR/{NODES_FILE}",
                "node_types_file": f"$NETWORK_DIR/{NODE_TYPES_FILE}",
                "populations": {node_population: {"type": "point_neuron"}},
            }],
            "edges": [{
                "edges_file": f"$NETWORK_DIR/{EDGES_FILE}",
                "edge_types_file": f"$NETWORK_DIR/{EDGE_TYPES_FILE}",
                "populations": {edge_population: {"type": "chemical"}},
            }],
        },
    }


def to_sonata(graph: ConnectomeGraph, out: str | Path, *, population: str = "microns",
              chunk_edges: int = 250_000, compression: str | None = None) -> SonataExport:
    """Write ``graph`` as a SONATA circuit into folder ``out`` (layout in the module docstring).

    population names the node population; the edge population is ``<population>_to_<population>``.
    chunk_edges: edge rows gathered and written at a time (bounds the working memory).
    compression: h5py filter for the datasets (default None). Leave it off for files that
    libsonata must read: its PyPI wheel links an HDF5 without the deflate filter and cannot
    read ``"gzip"`` datasets (h5py, BMTK and NEST can).
    """
    if not population or "/" in population:
        raise ValueError(f"population name {population!r}: must be non-empty and without '/'")
    if chunk_edges < 1:
        raise ValueError(f"chunk_edges must be >= 1, got {chunk_edges}")
    t0 = time.perf_counter()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    edge_population = f"{population}_to_{population}"
    files = {
        "nodes": folder / NODES_FILE, "edges": folder / EDGES_FILE,
        "node_types": folder / NODE_TYPES_FILE, "edge_types": folder / EDGE_TYPES_FILE,
        "circuit_config": folder / CONFIG_FILE,
    }
    node_types = _write_nodes(files["nodes"], graph, population, compression)
    _write_edges(files["edges"], graph, population, edge_population, chunk_edges, compression)
    _write_csv(node_types, files["node_types"])
    _write_csv(_edge_types(), files["edge_types"])
    with atomic_path(files["circuit_config"]) as tmp:
        tmp.write_text(json.dumps(circuit_config(population, edge_population), indent=2) + "\n")
    return SonataExport(folder=folder, node_population=population, edge_population=edge_population,
                        n_nodes=graph.n_nodes, n_edges=len(graph.edges),
                        seconds=time.perf_counter() - t0, files=files)
