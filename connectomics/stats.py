"""Graph statistics: the numbers behind :mod:`connectomics.plots`, the build summary and the
compiler's type-level masks.

Connection probability is defined once (:func:`connection_probability`): connected ordered
pairs over possible ordered pairs (:func:`possible_pairs`), where a population's pairs with
itself exclude autapses. Every table here, :func:`connectomics.graph.type_graph` and
``graphnet`` use it.

Tables
    :func:`cell_counts`, :func:`population_order`, :func:`connectivity_table`, :func:`layer_table`,
    :func:`degrees`, :func:`ei_connection_probability`, :func:`density`, :func:`reciprocity`,
    :func:`has_synapse_sizes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .cell_types import COARSE_TYPES, MTYPES
from .layers import LAYERS

if TYPE_CHECKING:  # pragma: no cover
    from .graph import ConnectomeGraph

#: the edge values :func:`connectivity_table` can tabulate
VALUES = ("connection_probability", "synapses_per_connection", "summed_size", "n_synapses",
          "connected_pairs")


# ------------------------------------------------------------------------------------------------
# connection probability
# ------------------------------------------------------------------------------------------------
def possible_pairs(n_pre, n_post, same_population=False):
    """Ordered ``(pre, post)`` pairs between ``n_pre`` and ``n_post`` cells; where
    ``same_population`` (the two groups are the same cells) the ``n_pre`` autapses are left out.
    Scalars give an ``int``, arrays broadcast (e.g. ``same_population=np.eye(k, dtype=bool)``)."""
    out = np.asarray(n_pre) * np.asarray(n_post) - np.where(same_population, n_pre, 0)
    return int(out) if out.ndim == 0 else out


def connection_probability(connected_pairs, n_pre, n_post, same_population=False,
                           empty: float = 0.0):
    """Connected / possible ordered pairs (:func:`possible_pairs`); ``empty`` where no pair is
    possible. Scalars give a ``float``, arrays broadcast."""
    possible = np.asarray(possible_pairs(n_pre, n_post, same_population), dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(possible > 0, np.asarray(connected_pairs, float) / np.maximum(possible, 1), empty)
    return float(p) if p.ndim == 0 else p


def has_synapse_sizes(graph: "ConnectomeGraph") -> bool:
    """Whether every connection of the graph has a summed synapse size; a count-only source
    (the bundled MICrONS column) leaves them all NaN."""
    return bool(graph.edges["summed_size"].notna().all())


def density(graph: "ConnectomeGraph") -> float:
    """Connection probability over all ordered pairs of distinct cells of the graph."""
    n = graph.n_nodes
    return connection_probability(len(graph.edges), n, n, same_population=True)


def ei_connection_probability(graph: "ConnectomeGraph") -> dict[str, float]:
    """Connection probability between the classes: ``{"E->E", "E->I", "I->E", "I->I"}`` (NaN for
    a class without cells)."""
    ei = (graph.nodes["ei"] == "I").to_numpy().astype(np.int64)
    e = graph.edges
    key = ei[e["pre"].to_numpy()] * 2 + ei[e["post"].to_numpy()]
    pairs = np.bincount(key, minlength=4)
    n = np.bincount(ei, minlength=2)
    out = {}
    for k, name in enumerate(("E->E", "E->I", "I->E", "I->I")):
        a, b = divmod(k, 2)
        out[name] = connection_probability(pairs[k], n[a], n[b], a == b, empty=float("nan"))
    return out


# ------------------------------------------------------------------------------------------------
# orders
# ------------------------------------------------------------------------------------------------
def type_rank(t: str) -> tuple[int, str]:
    """Sort key of a cell type or m-type: the canonical vocabulary order, unknown names last."""
    vocab = COARSE_TYPES + MTYPES
    return (vocab.index(t), t) if t in vocab else (len(vocab), t)


def layer_rank(layer: str) -> tuple[int, str]:
    """Sort key of a layer: pia to white matter, unknown names last."""
    return (LAYERS.index(layer), layer) if layer in LAYERS else (len(LAYERS), layer)


def layers_present(values) -> list[str]:
    """The distinct layers in ``values``, pia to white matter."""
    return sorted(set(map(str, values)), key=layer_rank)


def population_groups(graph: "ConnectomeGraph", by: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """``(names, E/I of each, layer of each)`` for ``by="population"`` (the type graph's nodes),
    ``"cell_type"`` or any other node column such as ``"mtype"`` (a group's E/I class and layer:
    its commonest)."""
    if by == "population":
        tg = graph.type_graph
        return (list(tg.nodes), {n: d["ei"] for n, d in tg.nodes(data=True)},
                {n: d["layer"] for n, d in tg.nodes(data=True)})
    if by == "cell_type":
        g = graph.nodes.groupby("cell_type", sort=True)
        ei = g["ei"].first().to_dict()
        layer = g["layer"].agg(lambda s: s.value_counts().index[0]).to_dict()
        return list(ei), ei, layer
    if by in graph.nodes.columns and by not in ("root_id", "nucleus_id"):
        g = graph.nodes.assign(**{by: graph.nodes[by].astype(str)}).groupby(by, sort=True)
        ei = g["ei"].agg(lambda s: s.value_counts().index[0]).to_dict()
        layer = g["layer"].agg(lambda s: s.value_counts().index[0]).to_dict()
        return list(ei), ei, layer
    raise ValueError(f"by={by!r}: use 'population', 'cell_type' or a node column (e.g. 'mtype')")


def population_order(graph: "ConnectomeGraph", order: str | Sequence[str] = "ei",
                     by: str = "population") -> list[str]:
    """Row/column order of a type x type matrix.

    ``order``: ``"ei"`` (excitatory then inhibitory; canonical type order, then layer),
    ``"layer"`` (by layer, E before I within a layer), ``"sorted"`` (alphabetical) or an explicit
    list of names (a subset is allowed). ``by``: ``"population"`` (``"<type>|<layer>"``) or
    ``"cell_type"``.
    """
    names, ei, layer = population_groups(graph, by)
    if not isinstance(order, str):
        order = [str(x) for x in order]
        unknown = [x for x in order if x not in names]
        if unknown:
            raise ValueError(f"unknown {by}(s) {unknown}; known: {names}")
        return order
    ctype = {n: n.split("|")[0] for n in names}
    if order == "ei":
        key = lambda n: (ei[n] != "E", type_rank(ctype[n]), layer_rank(layer[n]))  # noqa: E731
    elif order == "layer":
        key = lambda n: (layer_rank(layer[n]), ei[n] != "E", type_rank(ctype[n]))  # noqa: E731
    elif order == "sorted":
        key = str
    else:
        raise ValueError(f"order={order!r}: use 'ei', 'layer', 'sorted' or a list of names")
    return sorted(names, key=key)


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def cell_counts(graph: "ConnectomeGraph") -> pd.DataFrame:
    """Cells per cell type (rows, canonical order) and layer (columns, pia to white matter)."""
    tab = pd.crosstab(graph.nodes["cell_type"], graph.nodes["layer"])
    return tab.loc[sorted(tab.index, key=type_rank), sorted(tab.columns, key=layer_rank)]


def connectivity_table(graph: "ConnectomeGraph", value: str = "connection_probability",
                       order: str | Sequence[str] = "ei", by: str = "population") -> pd.DataFrame:
    """The type x type matrix (rows = presynaptic, columns = postsynaptic) of one edge value.

    ``value``: one of :data:`VALUES`: ``connection_probability`` (:func:`connection_probability`),
    ``synapses_per_connection``, ``summed_size``, ``n_synapses`` or ``connected_pairs``.
    Unconnected pairs are 0, except ``synapses_per_connection`` (NaN: undefined). ``by="cell_type"``
    pools the layers of each type (sums, then the ratios of the sums); any other node column
    (``by="mtype"``) groups the neuron-level graph by that column.
    """
    if value not in VALUES:
        raise ValueError(f"value={value!r}: choose one of {list(VALUES)}")
    names = population_order(graph, order, by)
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    if by in ("population", "cell_type"):
        sums, size = _type_graph_sums(graph, by, idx)
    else:
        sums, size = _node_column_sums(graph, by, idx)
    if value in sums:
        mat = sums[value]
    elif value == "synapses_per_connection":
        with np.errstate(invalid="ignore", divide="ignore"):
            mat = np.where(sums["connected_pairs"] > 0,
                           sums["n_synapses"] / np.maximum(sums["connected_pairs"], 1), np.nan)
    else:  # connection_probability
        mat = connection_probability(sums["connected_pairs"], size[:, None], size[None, :],
                                     np.eye(k, dtype=bool))
    return pd.DataFrame(mat, index=pd.Index(names, name="pre"), columns=pd.Index(names, name="post"))


def _type_graph_sums(graph: "ConnectomeGraph", by: str, idx: dict[str, int]) -> tuple[dict, np.ndarray]:
    """Summed edge values (k, k) and cells (k,) per group, from the type graph."""
    k = len(idx)
    sums = {c: np.zeros((k, k)) for c in ("n_synapses", "summed_size", "connected_pairs")}
    tg = graph.type_graph
    group = {n: (n if by == "population" else d["cell_type"]) for n, d in tg.nodes(data=True)}
    for a, b, d in tg.edges(data=True):
        i, j = idx.get(group[a]), idx.get(group[b])
        if i is None or j is None:
            continue
        for c in sums:
            sums[c][i, j] += d[c]
    size = np.zeros(k)
    for n, d in tg.nodes(data=True):
        if group[n] in idx:
            size[idx[group[n]]] += d["n_cells"]
    return sums, size


def _node_column_sums(graph: "ConnectomeGraph", by: str, idx: dict[str, int]) -> tuple[dict, np.ndarray]:
    """Summed edge values (k, k) and cells (k,) per value of the node column ``by``, from the
    neuron-level graph (groups not in ``idx`` are left out)."""
    k = len(idx)
    code = graph.nodes[by].astype(str).map(idx).fillna(-1).to_numpy(np.int64)
    pre, post = code[graph.edges["pre"].to_numpy()], code[graph.edges["post"].to_numpy()]
    keep = (pre >= 0) & (post >= 0)
    flat = pre[keep] * k + post[keep]
    sums = {"connected_pairs": np.bincount(flat, minlength=k * k).reshape(k, k).astype(float)}
    for c in ("n_synapses", "summed_size"):
        w = graph.edges[c].to_numpy(float)[keep]
        sums[c] = np.bincount(flat, weights=w, minlength=k * k).reshape(k, k)
    size = np.bincount(code[code >= 0], minlength=k).astype(float)
    return sums, size


def layer_table(graph: "ConnectomeGraph", pre_ei: str | None = "E") -> pd.DataFrame:
    """Layer-to-layer connectivity from the neuron-level graph.

    One row per (pre_layer, post_layer) of the layers present, pia to white matter:
    ``n_synapses, summed_size, connected_pairs, possible_pairs, connection_probability,
    synapses_per_connection``. ``pre_ei="E"``/``"I"`` keeps only excitatory/inhibitory presynaptic
    cells (``None``: all).
    """
    nodes, e = graph.nodes, graph.edges
    layers = layers_present(nodes["layer"])
    code = {l: i for i, l in enumerate(layers)}
    lay = nodes["layer"].map(code).to_numpy(np.int64)
    pre_ok = np.ones(len(nodes), bool) if pre_ei is None else (nodes["ei"] == pre_ei).to_numpy()
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    keep = pre_ok[pre]
    k = len(layers)
    key = lay[pre[keep]] * k + lay[post[keep]]
    nsyn = np.bincount(key, weights=e["n_synapses"].to_numpy(float)[keep], minlength=k * k)
    size = np.bincount(key, weights=e["summed_size"].to_numpy(float)[keep], minlength=k * k)
    pairs = np.bincount(key, minlength=k * k).astype(float)
    n_pre = np.bincount(lay[pre_ok], minlength=k)[:, None]
    n_all = np.bincount(lay, minlength=k)[None, :]
    same = np.eye(k, dtype=bool)
    a, b = np.divmod(np.arange(k * k), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "pre_layer": [layers[i] for i in a], "post_layer": [layers[j] for j in b],
            "n_synapses": nsyn.astype(np.int64), "summed_size": size,
            "connected_pairs": pairs.astype(np.int64),
            "possible_pairs": np.asarray(possible_pairs(n_pre, n_all, same)).ravel().astype(np.int64),
            "connection_probability": connection_probability(
                pairs.reshape(k, k), n_pre, n_all, same).ravel(),
            "synapses_per_connection": np.where(pairs > 0, nsyn / np.maximum(pairs, 1), np.nan),
        })


def degrees(graph: "ConnectomeGraph") -> pd.DataFrame:
    """Per cell: ``in_degree``/``out_degree`` (connected partners) and ``in_synapses``/
    ``out_synapses``, beside ``cell_type, layer, ei``."""
    n, e = graph.n_nodes, graph.edges
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    w = e["n_synapses"].to_numpy(float)
    return pd.DataFrame({
        "cell_type": graph.nodes["cell_type"].to_numpy(), "layer": graph.nodes["layer"].to_numpy(),
        "ei": graph.nodes["ei"].to_numpy(),
        "in_degree": np.bincount(post, minlength=n), "out_degree": np.bincount(pre, minlength=n),
        "in_synapses": np.bincount(post, weights=w, minlength=n).astype(np.int64),
        "out_synapses": np.bincount(pre, weights=w, minlength=n).astype(np.int64),
    })


def reciprocity(graph: "ConnectomeGraph") -> float:
    """Fraction of connected ordered pairs whose reverse pair is connected too (NaN: no edges)."""
    e = graph.edges
    if not len(e):
        return float("nan")
    n = graph.n_nodes
    pre, post = e["pre"].to_numpy(np.int64), e["post"].to_numpy(np.int64)
    return float(np.isin(post * n + pre, pre * n + post).mean())
