"""Plans: what a graph says a column of a :class:`ColumnSpec` is, before any module exists.

:func:`plan_column` turns a graph (neuron-level :class:`~connectomics.graph.ConnectomeGraph` or
type-level networkx ``DiGraph``) and a spec into one :class:`LayerPlan` per network layer (its
units in order, their populations, E/I class and inhibitory input) and one
:class:`ProjectionPlan` per projection (its edge list with synapse counts), the null-model
transform applied first. :func:`graphnet.column.compile_column` builds the modules from them;
they are also what a person inspects (fan-ins, edge counts, masks) without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import networkx as nx
import numpy as np
import pandas as pd

from connectomics.graph import ConnectomeGraph, population_key
from connectomics.stats import layer_rank

from .inhibition import inhibitory_input, population_inhibitory_input
from .null_models import NULL_MODELS, TYPE_NULL_MODELS
from .spec import ColumnSpec, LayerSpec

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse


class DisplayOrder(NamedTuple):
    """A layer's units grouped by population, for display (see :meth:`LayerPlan.display_order`)."""

    order: np.ndarray       # (n,) permutation of the layer's units: unit order -> display order
    populations: list[str]  # each population once, in display order
    sizes: list[int]        # its number of units


@dataclass
class LayerPlan:
    """One network layer: its units in order and what each unit is.

    Units keep their node order within a layer: :func:`_select` sorts by the spec's cell types,
    then by its m-types and layers where it lists them, then by node index. Each unit's
    initialisation draw follows this order, so it is part of what makes a committed result
    reproduce. A population's units need not be adjacent in it: ``ColumnSpec.bionic()`` lists
    no layers, so a type's cells of different cortical layers interleave in node order.
    ``populations`` and ``population_sizes`` are therefore the *runs* of consecutive units of one
    population (``cell_type|layer``; m-type layers: ``mtype|layer``), in unit order, and a
    population may have many runs. Displays group them: :meth:`display_order` gives each
    population once and the permutation that draws its units together
    (``CorticalColumn.summary`` and :func:`graphnet.plots.mask_images` use it). ``groups``
    labels each unit by the spec's ``populations`` grouping, the populations that share
    parameters under ``weights="counts"``.
    """

    name: str
    populations: list[str]       # runs of consecutive units of one population, in unit order
    population_sizes: list[int]  # units in each run
    unit_ids: list[Any]          # neuron-level: node indices; type-level: "<pop>#k"
    ei: np.ndarray               # (n,) "E"/"I"
    inhibitory_input: np.ndarray  # (n,)
    unit_attrs: list[dict] = field(default_factory=list)
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # (n,) labels

    @property
    def size(self) -> int:
        return len(self.unit_ids)

    def display_order(self) -> DisplayOrder:
        """The units grouped by population, for tables and figures; the units keep their order.

        Populations are ordered by their type (or m-type) as it first appears in unit order (the
        spec's order), then by layer from pia to white matter; within a population, units keep
        their unit order. ``order`` is a permutation: ``x[..., order]`` shows a ``(..., n)`` array
        of this layer's units grouped.
        """
        if sum(self.population_sizes) != self.size or len(self.populations) != len(self.population_sizes):
            raise ValueError(f"layer {self.name!r}: populations {len(self.populations)} runs of "
                             f"{sum(self.population_sizes)} units do not cover its {self.size} units")
        names = list(dict.fromkeys(self.populations))
        kind_rank: dict[str, int] = {}
        for n in names:
            kind_rank.setdefault(n.rpartition("|")[0], len(kind_rank))
        names.sort(key=lambda n: (kind_rank[n.rpartition("|")[0]], layer_rank(n.rpartition("|")[2])))
        rank = {n: i for i, n in enumerate(names)}
        code = np.repeat([rank[p] for p in self.populations], self.population_sizes).astype(np.int64)
        order = np.argsort(code, kind="stable")
        return DisplayOrder(order, names, np.bincount(code, minlength=len(names)).tolist())


@dataclass
class ProjectionPlan:
    src: str
    dst: str
    pre: np.ndarray    # (E,) local index in src
    post: np.ndarray   # (E,) local index in dst
    n_synapses: np.ndarray
    summed_size: np.ndarray
    n_src: int
    n_dst: int

    @property
    def density(self) -> float:
        return len(self.pre) / max(1, self.n_src * self.n_dst)

    @property
    def key(self) -> str:
        return f"{self.src}->{self.dst}"


def _rank(values: pd.Series, order: tuple[str, ...] | None) -> np.ndarray:
    if order is None:
        return np.zeros(len(values), dtype=np.int64)
    r = {v: i for i, v in enumerate(order)}
    return values.map(r).fillna(len(order)).to_numpy(np.int64)


def _select(nodes: pd.DataFrame, ls: LayerSpec) -> np.ndarray:
    sel = np.ones(len(nodes), dtype=bool)
    if ls.cell_types is not None:
        sel &= nodes["cell_type"].isin(ls.cell_types).to_numpy()
    if ls.layers is not None:
        sel &= nodes["layer"].isin(ls.layers).to_numpy()
    if ls.mtypes is not None:
        sel &= nodes["mtype"].isin(ls.mtypes).to_numpy()
    idx = np.flatnonzero(sel)
    sub = nodes.iloc[idx]
    order = np.lexsort((idx, _rank(sub["layer"], ls.layers), _rank(sub["mtype"], ls.mtypes),
                        _rank(sub["cell_type"], ls.cell_types)))
    return idx[order]


def _plan_neuron_graph(g: ConnectomeGraph, spec: ColumnSpec) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    nodes = g.nodes
    layer_of = np.full(g.n_nodes, -1, dtype=np.int64)
    local_of = np.full(g.n_nodes, -1, dtype=np.int64)
    plans: list[LayerPlan] = []
    for li, ls in enumerate(spec.layers):
        idx = _select(nodes, ls)
        if len(idx) == 0:
            raise ValueError(f"layer {ls.name!r}: no cells with cell_type in {ls.cell_types}, "
                             f"layer in {ls.layers}, mtype in {ls.mtypes}")
        clash = layer_of[idx] >= 0
        if clash.any():
            other = spec.layers[int(layer_of[idx[clash][0]])].name
            raise ValueError(f"layers {other!r} and {ls.name!r} share {int(clash.sum())} cell(s)")
        layer_of[idx] = li
        local_of[idx] = np.arange(len(idx))
        sub = nodes.iloc[idx]
        label = "mtype" if ls.mtypes is not None else "cell_type"  # m-type layers list m-types
        pops = [population_key(a, b) for a, b in zip(sub[label].astype(str), sub["layer"].astype(str))]
        names, sizes = [], []
        for p in pops:
            if not names or names[-1] != p:
                names.append(p)
                sizes.append(0)
            sizes[-1] += 1
        attrs = sub[["cell_type", "mtype", "layer", "ei", "root_id"]].to_dict("records")
        plans.append(LayerPlan(groups=population_labels(sub, spec.populations),
            name=ls.name, populations=names, population_sizes=sizes,
            unit_ids=[int(i) for i in idx], ei=sub["ei"].to_numpy().astype(str),
            inhibitory_input=inhibitory_input(g, idx, spec.inhibition_measure, spec.min_synapses),
            unit_attrs=attrs,
        ))
    e = g.edges[g.edges["n_synapses"] >= spec.min_synapses]
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    nsyn, size = e["n_synapses"].to_numpy(), e["summed_size"].to_numpy(float)
    lp, lq = layer_of[pre], layer_of[post]
    pairs = list(spec.projections) + ([(l.name, l.name) for l in spec.layers] if spec.intra_layer else [])
    index = {l.name: i for i, l in enumerate(spec.layers)}
    projs: list[ProjectionPlan] = []
    for src, dst in pairs:
        s, d = index[src], index[dst]
        ns, nd = plans[s].size, plans[d].size
        if spec.mask == "dense" or spec.weights == "dense":
            q, p = np.divmod(np.arange(ns * nd), ns)   # post-major, CSR order
            if s == d:
                keep = q != p
                q, p = q[keep], p[keep]
            obs = np.zeros((nd, ns)), np.zeros((nd, ns))
            k = (lp == s) & (lq == d)
            obs[0][local_of[post[k]], local_of[pre[k]]] = nsyn[k]
            obs[1][local_of[post[k]], local_of[pre[k]]] = size[k]
            projs.append(ProjectionPlan(src, dst, p, q, obs[0][q, p], obs[1][q, p], ns, nd))
            continue
        k = (lp == s) & (lq == d)
        projs.append(ProjectionPlan(src, dst, local_of[pre[k]], local_of[post[k]], nsyn[k].astype(float),
                                    size[k], ns, nd))
    return plans, projs


def _plan_type_graph(tg: nx.DiGraph, spec: ColumnSpec) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    if spec.mask in NULL_MODELS and spec.mask not in TYPE_NULL_MODELS:
        raise ValueError(f"mask={spec.mask!r} needs a neuron-level ConnectomeGraph")
    rng = np.random.default_rng(spec.seed)
    plans: list[LayerPlan] = []
    slices: dict[str, list[tuple[str, slice]]] = {}
    used: set[str] = set()
    for ls in spec.layers:
        if ls.mtypes is not None:
            raise ValueError(f"layer {ls.name!r}: m-type selection needs a neuron-level graph")
        pops = [n for n, d in tg.nodes(data=True)
                if (ls.cell_types is None or d["cell_type"] in ls.cell_types)
                and (ls.layers is None or d["layer"] in ls.layers)]
        ct_rank = {c: i for i, c in enumerate(ls.cell_types or ())}
        ly_rank = {c: i for i, c in enumerate(ls.layers or ())}
        pops.sort(key=lambda n: (ct_rank.get(tg.nodes[n]["cell_type"], 0),
                                 ly_rank.get(tg.nodes[n]["layer"], 0), n))
        if not pops:
            raise ValueError(f"layer {ls.name!r}: no populations match")
        if used & set(pops):
            raise ValueError(f"layer {ls.name!r} shares populations {sorted(used & set(pops))}")
        used |= set(pops)
        sizes = [int(tg.nodes[p]["n_cells"]) for p in pops]
        units, ei, inh, sl, attrs, start = [], [], [], [], [], 0
        for p, n in zip(pops, sizes):
            d = tg.nodes[p]
            c = population_inhibitory_input(tg, p, spec.inhibition_measure)
            units += [f"{p}#{k}" for k in range(n)]
            ei += [d["ei"]] * n
            inh += [c] * n
            attrs += [{"cell_type": d["cell_type"], "layer": d["layer"], "ei": d["ei"],
                       "population": p}] * n
            sl.append((p, slice(start, start + n)))
            start += n
        slices[ls.name] = sl
        if spec.populations == "mtype":
            raise ValueError("populations='mtype' needs a neuron-level graph (a type-level graph "
                             "has no m-types)")
        key = "cell_type" if spec.populations == "cell_type" else "population"
        groups = np.array([a[key] for a in attrs], dtype=object)
        plans.append(LayerPlan(ls.name, pops, sizes, units, np.array(ei), np.array(inh), attrs,
                               groups=groups))
    # masks are sampled from the (null-model) graph; units and inhibition come from the graph
    sampled = TYPE_NULL_MODELS[spec.mask](tg) if spec.mask in TYPE_NULL_MODELS else tg
    index = {p.name: i for i, p in enumerate(plans)}
    pairs_ = list(spec.projections) + ([(l.name, l.name) for l in spec.layers] if spec.intra_layer else [])
    projs = []
    for src, dst in pairs_:
        ns, nd = plans[index[src]].size, plans[index[dst]].size
        m = np.zeros((nd, ns), dtype=bool)
        syn = np.zeros((nd, ns))
        ssz = np.zeros((nd, ns))
        for P, sp in slices[src]:
            for Q, sq in slices[dst]:
                ed = sampled.edges[P, Q] if sampled.has_edge(P, Q) else None
                if spec.mask == "dense" or spec.weights == "dense":
                    p = 1.0
                else:  # connectome, or the random null model's uniform probability
                    p = float(ed["connection_probability"]) if ed is not None else 0.0
                blk = rng.random((sq.stop - sq.start, sp.stop - sp.start)) < p
                if P == Q:
                    np.fill_diagonal(blk, False)
                m[sq, sp] = blk
                if ed is not None and ed.get("connected_pairs", 0):
                    syn[sq, sp] = ed["synapses_per_connection"]
                    ssz[sq, sp] = ed["summed_size"] / ed["connected_pairs"]
        q, p = np.nonzero(m)
        projs.append(ProjectionPlan(src, dst, p, q, syn[q, p], ssz[q, p], ns, nd))
    return plans, projs


def plan_column(graph: ConnectomeGraph | nx.DiGraph,
                spec: ColumnSpec | None = None) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    """The layers (units, E/I, inhibitory input) and projections (edge lists) a column of ``spec``
    has on ``graph``, with the null-model transform applied: what :func:`compile_column` builds,
    before any weight exists (for inspecting masks: fan-ins, edge counts)."""
    spec = spec or ColumnSpec.bionic()
    if isinstance(graph, ConnectomeGraph):
        if spec.mask in NULL_MODELS:
            graph = NULL_MODELS[spec.mask](graph, seed=spec.seed)
        plans, projs = _plan_neuron_graph(graph, spec)
    elif isinstance(graph, nx.DiGraph):
        plans, projs = _plan_type_graph(graph, spec)
    else:
        raise TypeError(f"graph must be a ConnectomeGraph or a networkx DiGraph, got {type(graph)}")
    if spec.weights == "counts":
        for pp in projs:
            check_counts(pp.n_synapses, f"projection {pp.key}")
    return plans, projs


def check_counts(n_synapses: np.ndarray, what: str) -> None:
    """``weights="counts"`` needs a positive, finite synapse count on every connection;
    ``ValueError`` naming ``what`` otherwise."""
    n = np.asarray(n_synapses, dtype=np.float64)
    bad = ~(np.isfinite(n) & (n > 0))
    if bad.any():
        raise ValueError(f"weights='counts': {what} has {int(bad.sum())} of {len(n)} connections "
                         "without a synapse count (n_synapses missing or 0); this graph cannot "
                         "weight by counts: use weights='free'")


# ------------------------------------------------------------------------------------------------
# the whole column as one network (recurrent column, reservoir)
# ------------------------------------------------------------------------------------------------
#: How cells are grouped into the populations that share parameters: the coarse cell type, the
#: m-type, or the cell type within its cortical layer (``"23P|L2/3"``).
POPULATION_LABELS = ("cell_type", "mtype", "type_layer")


def population_labels(nodes: pd.DataFrame, by: str = "cell_type") -> np.ndarray:
    """``(n,)`` population label of each cell: its ``cell_type``, its ``mtype`` or
    ``"<cell_type>|<layer>"`` (:data:`POPULATION_LABELS`)."""
    if by == "cell_type":
        return nodes["cell_type"].astype(str).to_numpy()
    if by == "mtype":
        return nodes["mtype"].astype(str).to_numpy()
    if by == "type_layer":
        return np.array([population_key(a, b) for a, b in
                         zip(nodes["cell_type"].astype(str), nodes["layer"].astype(str))], dtype=object)
    raise ValueError(f"populations={by!r}; choose one of {POPULATION_LABELS}")


@dataclass
class NetworkPlan:
    """Every signed cell of a graph as the units of one recurrent network.

    Units are the graph's cells whose E/I class is known (``ei`` "E" or "I"; class "U" cells have
    no sign and are left out), in node order. ``pre``/``post`` index units; ``n_synapses`` is
    each connection's synapse count. ``population`` codes each unit into ``population_names``.
    """

    unit_ids: np.ndarray           # (n,) node indices of the graph
    ei: np.ndarray                 # (n,) "E" / "I"
    population: np.ndarray         # (n,) int64 code into population_names
    population_names: list[str]
    pre: np.ndarray                # (E,) presynaptic unit
    post: np.ndarray               # (E,) postsynaptic unit
    n_synapses: np.ndarray         # (E,) float64
    unit_attrs: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def size(self) -> int:
        return len(self.unit_ids)

    @property
    def sign(self) -> np.ndarray:
        """``(n,)`` Dale sign of each unit: +1 (E) or -1 (I)."""
        return np.where(self.ei == "I", -1.0, 1.0)

    def units_of(self, populations: tuple[str, ...] | list[str]) -> np.ndarray:
        """Unit indices whose population is one of ``populations`` (a cell type, m-type or
        ``type|layer`` label, as the plan was grouped); ``ValueError`` naming any that has no
        unit."""
        codes = {n: i for i, n in enumerate(self.population_names)}
        missing = [p for p in populations if p not in codes]
        if missing:
            raise ValueError(f"population(s) {missing} have no cells; populations: "
                             f"{self.population_names}")
        return np.flatnonzero(np.isin(self.population, [codes[p] for p in populations]))

    def count_matrix(self, signed: bool = True) -> "scipy.sparse.csr_matrix":
        """``(n, n)`` CSR matrix, rows = post, columns = pre, of the synapse counts
        (times the presynaptic sign when ``signed``): the connectome's ``s_j n_ij``."""
        import scipy.sparse as sp

        vals = self.n_synapses * (self.sign[self.pre] if signed else 1.0)
        return sp.csr_matrix((vals, (self.post, self.pre)), shape=(self.size, self.size))


def plan_network(graph: ConnectomeGraph, populations: str = "cell_type", mask: str = "connectome",
                 seed: int = 0, min_synapses: int = 1) -> NetworkPlan:
    """The whole graph (every E and I cell) as one network, the null model ``mask``
    (:data:`graphnet.null_models.NULL_MODELS`, seeded with ``seed``) applied first; pairs with
    at least ``min_synapses`` synapses are connections."""
    if not isinstance(graph, ConnectomeGraph):
        raise TypeError(f"a network plan needs a neuron-level ConnectomeGraph, got {type(graph)}")
    if mask == "dense":
        raise ValueError("mask='dense' has no synapse counts; a network plan needs a graph mask")
    if mask != "connectome":
        if mask not in NULL_MODELS:
            raise ValueError(f"mask={mask!r}; choose 'connectome' or one of {sorted(NULL_MODELS)}")
        graph = NULL_MODELS[mask](graph, seed=seed)
    nodes = graph.nodes
    keep = nodes["ei"].isin(["E", "I"]).to_numpy()
    unit_ids = np.flatnonzero(keep)
    local = np.full(graph.n_nodes, -1, dtype=np.int64)
    local[unit_ids] = np.arange(len(unit_ids))
    sub = nodes.iloc[unit_ids]
    labels = population_labels(sub, populations)
    codes, names = pd.factorize(pd.Series(labels, dtype=object), sort=True)
    e = graph.edges[graph.edges["n_synapses"] >= min_synapses]
    pre, post = local[e["pre"].to_numpy()], local[e["post"].to_numpy()]
    ok = (pre >= 0) & (post >= 0)
    return NetworkPlan(unit_ids=unit_ids, ei=sub["ei"].to_numpy().astype(str),
                       population=codes.astype(np.int64), population_names=[str(n) for n in names],
                       pre=pre[ok], post=post[ok],
                       n_synapses=e["n_synapses"].to_numpy(np.float64)[ok],
                       unit_attrs=sub[["cell_type", "mtype", "layer", "ei", "root_id"]].reset_index(drop=True))
