"""The two graphs of a column: neuron-level and cell-type/layer level.

Neuron-level graph
    ``nodes`` (one row per neuron, row order = node index)::

        root_id int64, nucleus_id int64, cell_type str (coarse), mtype str, layer str, ei str ("E"/"I"),
        x_nm, y_nm, z_nm float64 (CAVE nm), depth_um float64 (below pia)

    ``edges`` (one row per connected ordered pair)::

        pre int64, post int64 (node indices), pre_root_id, post_root_id int64,
        n_synapses int64, summed_size float64 (voxels; NaN where the source has no synapse sizes,
        e.g. the bundled MICrONS column: counts only)

Cell-type/layer graph (:func:`type_graph`)
    a networkx ``DiGraph`` whose nodes are populations ``"<cell_type>|<layer>"`` with attributes
    ``cell_type, layer, ei, n_cells``, and whose edges carry ``n_synapses, summed_size,
    connected_pairs, possible_pairs, connection_probability`` (= connected / possible pairs; a
    population's pairs with itself exclude autapses: :func:`connectomics.stats.connection_probability`) and ``synapses_per_connection``.

On disk (:meth:`ConnectomeGraph.save`): ``nodes.parquet``, ``edges.parquet``, ``type_nodes.parquet``,
``type_edges.parquet``, ``type_graph.graphml``, ``meta.json``; :meth:`ConnectomeGraph.to_pyg` gives
a PyTorch Geometric ``Data``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import networkx as nx
import numpy as np
import pandas as pd

from .atomic_io import atomic_dir, atomic_path, write_json_atomic
from .cache import CacheError, read_parquet_checked, write_parquet_atomic
from .stats import connection_probability, possible_pairs

if TYPE_CHECKING:
    import scipy.sparse as sp

NODE_COLUMNS: dict[str, str] = {
    "root_id": "int64", "nucleus_id": "int64", "cell_type": "object", "mtype": "object",
    "layer": "object", "ei": "object", "x_nm": "float64", "y_nm": "float64", "z_nm": "float64",
    "depth_um": "float64",
}
EDGE_COLUMNS: dict[str, str] = {
    "pre": "int64", "post": "int64", "pre_root_id": "int64", "post_root_id": "int64",
    "n_synapses": "int64", "summed_size": "float64",
}
#: Between the cell type and the layer of a population's name (:func:`population_key`).
POPULATION_SEPARATOR = "|"
META_FILE = "meta.json"
#: What :meth:`ConnectomeGraph.save` writes into a graph folder.
GRAPH_FILES = ("nodes.parquet", "edges.parquet", "type_nodes.parquet", "type_edges.parquet",
               "type_graph.graphml", META_FILE)
TYPE_EDGE_COLUMNS = (
    "pre_population", "post_population", "n_synapses", "summed_size", "connected_pairs",
    "possible_pairs", "connection_probability", "synapses_per_connection",
)


def population_key(cell_type, layer):
    """Name of a (cell type, layer) population, ``"<cell_type>|<layer>"``, e.g. ``"23P|L2/3"``.

    Two labels give one name (str); two columns (Series, arrays or lists of equal length, e.g.
    ``nodes["cell_type"], nodes["layer"]``) give the name of every row, a Series of str with the
    first column's index.
    """
    if not isinstance(cell_type, (pd.Series, pd.Index, np.ndarray, list)):
        return f"{cell_type}{POPULATION_SEPARATOR}{layer}"
    cell_type = cell_type if isinstance(cell_type, pd.Series) else pd.Series(cell_type)
    layer = pd.Series(np.asarray(layer, dtype=object), index=cell_type.index)
    return cell_type.astype(str) + POPULATION_SEPARATOR + layer.astype(str)


def population_edge_table(pop: np.ndarray, names: list[str], pre: np.ndarray, post: np.ndarray,
                          n_synapses: np.ndarray, summed_size: np.ndarray) -> pd.DataFrame:
    """Population-to-population sums of neuron-level edges.

    pop (n_nodes,) population code of each node, ``names[code]`` its key; pre, post, n_synapses,
    summed_size (n_edges,) one entry per connected pair. Returns one row per connected population
    pair: pre_population, post_population, n_synapses, summed_size, connected_pairs.
    """
    k = len(names)
    code = pop[pre].astype(np.int64) * k + pop[post]
    n = np.bincount(code, weights=n_synapses, minlength=k * k)
    size = np.bincount(code, weights=summed_size, minlength=k * k)
    pairs = np.bincount(code, minlength=k * k)
    hit = np.flatnonzero(pairs)
    a, b = np.divmod(hit, k)
    names_arr = np.asarray(names, dtype=object)
    return pd.DataFrame({
        "pre_population": names_arr[a], "post_population": names_arr[b],
        "n_synapses": n[hit].astype(np.int64), "summed_size": size[hit],
        "connected_pairs": pairs[hit].astype(np.int64),
    })


def type_graph_from_table(nodes: pd.DataFrame, table: pd.DataFrame) -> nx.DiGraph:
    """The type graph from node populations and a :func:`population_edge_table`."""
    g = nx.DiGraph()
    grouped = nodes.groupby(["cell_type", "layer"], sort=True)
    for (ct, layer), n in grouped.size().items():
        g.add_node(population_key(ct, layer), cell_type=ct, layer=layer,
                   ei=grouped["ei"].first()[(ct, layer)], n_cells=int(n))
    for row in table.itertuples(index=False):
        a, b = row.pre_population, row.post_population
        na, nb = g.nodes[a]["n_cells"], g.nodes[b]["n_cells"]
        g.add_edge(
            a, b, n_synapses=int(row.n_synapses), summed_size=float(row.summed_size),
            connected_pairs=int(row.connected_pairs), possible_pairs=possible_pairs(na, nb, a == b),
            connection_probability=connection_probability(row.connected_pairs, na, nb, a == b),
            synapses_per_connection=float(row.n_synapses / row.connected_pairs),
        )
    return g


def node_populations(nodes: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(population code per node, population keys) in sorted key order."""
    keys = population_key(nodes["cell_type"], nodes["layer"])
    cat = pd.Categorical(keys, categories=sorted(keys.unique()))
    return cat.codes.astype(np.int64), list(cat.categories)


def type_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> nx.DiGraph:
    """Aggregate a neuron-level graph into the cell-type/layer graph (see module docstring)."""
    pop, names = node_populations(nodes)
    table = population_edge_table(
        pop, names, edges["pre"].to_numpy(), edges["post"].to_numpy(),
        edges["n_synapses"].to_numpy(float), edges["summed_size"].to_numpy(float))
    return type_graph_from_table(nodes, table)


def type_tables(g: nx.DiGraph) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The type graph as two tables: populations and population-to-population edges."""
    tn = pd.DataFrame([{"population": n, **d} for n, d in g.nodes(data=True)])
    te = pd.DataFrame(
        [{"pre_population": a, "post_population": b, **d} for a, b, d in g.edges(data=True)],
        columns=list(TYPE_EDGE_COLUMNS),
    )
    return tn, te


@dataclass
class ConnectomeGraph:
    """A column's neuron-level graph with its cell-type/layer aggregate."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    meta: dict = field(default_factory=dict)
    _types: nx.DiGraph | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.nodes = self.nodes.reset_index(drop=True)
        missing = [c for c in NODE_COLUMNS if c not in self.nodes.columns]
        if missing:
            raise ValueError(f"nodes lack column(s) {missing}")
        missing = [c for c in EDGE_COLUMNS if c not in self.edges.columns]
        if missing:
            raise ValueError(f"edges lack column(s) {missing}")
        n = len(self.nodes)
        if len(self.edges) and (self.edges[["pre", "post"]].to_numpy().max() >= n
                                or self.edges[["pre", "post"]].to_numpy().min() < 0):
            raise ValueError("edge endpoints outside the node index range")

    # -- views --------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def type_graph(self) -> nx.DiGraph:
        if self._types is None:
            self._types = type_graph(self.nodes, self.edges)
        return self._types

    def population(self, cell_types: Iterable[str] | None = None,
                   layers: Iterable[str] | None = None) -> np.ndarray:
        """Node indices (sorted) of the cells whose type and layer are in the given sets."""
        sel = np.ones(len(self.nodes), dtype=bool)
        if cell_types is not None:
            sel &= self.nodes["cell_type"].isin(list(cell_types)).to_numpy()
        if layers is not None:
            sel &= self.nodes["layer"].isin(list(layers)).to_numpy()
        return np.flatnonzero(sel)

    def adjacency(self, weight: str | None = None) -> "sp.csr_matrix":
        """(n, n) CSR matrix, rows = pre, columns = post; 1 per edge or the edge's ``weight``."""
        import scipy.sparse as sp

        vals = np.ones(len(self.edges)) if weight is None else self.edges[weight].to_numpy(float)
        return sp.csr_matrix(
            (vals, (self.edges["pre"].to_numpy(), self.edges["post"].to_numpy())),
            shape=(self.n_nodes, self.n_nodes),
        )

    def to_networkx(self) -> nx.DiGraph:
        """Neuron-level networkx graph (node = index, with the node columns as attributes)."""
        g = nx.DiGraph()
        g.add_nodes_from((i, r) for i, r in enumerate(self.nodes.to_dict("records")))
        g.add_edges_from(
            (int(r["pre"]), int(r["post"]), {"n_synapses": int(r["n_synapses"]),
                                             "summed_size": float(r["summed_size"])})
            for r in self.edges.to_dict("records")
        )
        return g

    def to_pyg(self):
        """PyTorch Geometric ``Data``: ``edge_index`` (2, E) pre->post, ``edge_attr`` (E, 2) =
        [n_synapses, summed_size], ``pos`` (N, 3) nm, ``depth_um`` (N,), ``is_inhibitory`` (N,),
        ``cell_type``/``layer`` (N,) integer codes into ``cell_type_names``/``layer_names``."""
        import torch
        from torch_geometric.data import Data

        ct = pd.Categorical(self.nodes["cell_type"])
        ly = pd.Categorical(self.nodes["layer"])
        return Data(
            edge_index=torch.as_tensor(self.edges[["pre", "post"]].to_numpy().T.copy(), dtype=torch.long),
            edge_attr=torch.as_tensor(self.edges[["n_synapses", "summed_size"]].to_numpy(float),
                                      dtype=torch.float32),
            pos=torch.as_tensor(self.nodes[["x_nm", "y_nm", "z_nm"]].to_numpy(), dtype=torch.float64),
            depth_um=torch.as_tensor(self.nodes["depth_um"].to_numpy(), dtype=torch.float32),
            is_inhibitory=torch.as_tensor((self.nodes["ei"] == "I").to_numpy()),
            cell_type=torch.as_tensor(ct.codes.astype(np.int64)),
            layer=torch.as_tensor(ly.codes.astype(np.int64)),
            root_id=torch.as_tensor(self.nodes["root_id"].to_numpy()),
            cell_type_names=list(ct.categories), layer_names=list(ly.categories),
            num_nodes=self.n_nodes,
        )

    def checksum(self) -> str:
        """sha256 (hex) of the node and edge tables (column names, values and index): what a
        checkpoint records to name the graph its column was compiled from."""
        import hashlib

        h = hashlib.sha256()
        for table in (self.nodes, self.edges):
            h.update(str(list(table.columns)).encode())
            h.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
        return h.hexdigest()

    # -- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the graph files into ``folder``, all or nothing (:func:`~connectomics.atomic_io.atomic_dir`).

        ``meta.json`` holds :attr:`meta` plus ``n_nodes``, ``n_edges`` and ``checksum``
        (:meth:`checksum`), which :func:`load_graph` checks the files against. An existing
        ``folder`` is replaced once the new one is complete; one holding anything but graph files
        (and their ``plots/``) is refused, so no other file is ever deleted.
        """
        folder = Path(folder)
        _check_replaceable(folder)
        # the checksum of what load_graph reads back: the saved columns, a fresh index
        nodes = self.nodes[list(NODE_COLUMNS)].reset_index(drop=True)
        edges = self.edges[list(EDGE_COLUMNS)].reset_index(drop=True)
        saved = ConnectomeGraph(nodes=nodes, edges=edges)
        tn, te = type_tables(self.type_graph)
        meta = {**self.meta, "n_nodes": saved.n_nodes, "n_edges": len(edges), "checksum": saved.checksum()}
        with atomic_dir(folder) as tmp:
            write_parquet_atomic(nodes, tmp / "nodes.parquet")
            write_parquet_atomic(edges, tmp / "edges.parquet")
            write_parquet_atomic(tn, tmp / "type_nodes.parquet")
            write_parquet_atomic(te, tmp / "type_edges.parquet")
            with atomic_path(tmp / "type_graph.graphml") as path:
                nx.write_graphml(self.type_graph, path)
            write_json_atomic(tmp / META_FILE, meta)
        return folder


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace an existing ``folder`` that holds files a graph folder never has."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; the graph needs a folder")
    foreign = sorted(p.name for p in folder.iterdir()
                     if p.name not in GRAPH_FILES and p.name != "plots" and not p.name.startswith("."))
    if foreign:
        raise FileExistsError(
            f"{folder}: holds files that are not a graph's ({', '.join(foreign[:5])}); saving the graph "
            "replaces the whole folder: choose an empty folder or a graph folder")


def _read_meta(folder: Path) -> dict:
    """``meta.json`` of a graph folder ({} if absent); unreadable or not an object: CacheError."""
    path = folder / META_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path}: not valid JSON ({e}); rebuild the graph") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{path}: holds a JSON {type(meta).__name__}, not an object; rebuild the graph")
    return meta


def load_graph(folder: str | Path) -> ConnectomeGraph:
    """Load what :meth:`ConnectomeGraph.save` (``python -m pipelines.build_graph``) wrote.

    The node and edge counts and the checksum are checked against ``meta.json`` where it records
    them (a ``meta.json`` without them is not checked): files of two graphs in one folder, or a file
    changed after the save, raise :class:`~connectomics.cache.CacheError` naming the folder.
    """
    folder = Path(folder)
    if not (folder / "nodes.parquet").exists():
        raise FileNotFoundError(f"{folder}: no nodes.parquet (run `python -m pipelines.build_graph`)")
    meta = _read_meta(folder)   # first: files replaced after it disagree with it
    nodes = read_parquet_checked(folder / "nodes.parquet")
    edges = read_parquet_checked(folder / "edges.parquet")
    for key, what, n in (("n_nodes", "nodes", len(nodes)), ("n_edges", "edges", len(edges))):
        if key in meta and meta[key] != n:
            raise CacheError(f"{folder}: {n} {what} in the files, {META_FILE} says {meta[key]}: the folder "
                             "mixes files of two graphs; rebuild it")
    try:
        graph = ConnectomeGraph(nodes=nodes, edges=edges, meta=meta)
    except ValueError as e:
        raise CacheError(f"{folder}: not a valid graph ({e}); rebuild it") from None
    if "checksum" in meta and graph.checksum() != meta["checksum"]:
        raise CacheError(f"{folder}: checksum {graph.checksum()[:12]} of the node and edge files does not "
                         f"match {META_FILE} ({str(meta['checksum'])[:12]}): a file was changed or "
                         "comes from another graph; rebuild it")
    return graph
