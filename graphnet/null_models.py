"""Null models: graph transforms ``(ConnectomeGraph, seed) -> ConnectomeGraph``.

Each keeps the node table's rows (cells, positions, root ids) and says what it keeps; a
*population* is ``cell_type|layer`` (:func:`connectomics.graph.population_key`), a *block* the
edges from one population to another. A compiled column layer is a union of populations (types,
or types within layers), so a null that keeps every block's edge count and synapse total keeps
them for every compiled projection too: those nulls are *matched per projection*.

======================  =============================================================  =========
null model              keeps                                                          matched
======================  =============================================================  =========
:func:`block_random`    node table; every block's edge count and its multiset of       yes
                        (``n_synapses``, ``summed_size``); edges placed uniformly
                        over the block's ordered pairs (no autapse, no duplicate)
:func:`degree_shuffle`  node table; every cell's in- and out-degree; every block's     yes
                        edge count; each cell's multiset of outgoing synapse counts
                        (attributes travel with the pre cell), hence block totals
:func:`weight_shuffle`  node table and every edge (the topology); the                  yes
                        (``n_synapses``, ``summed_size``) pairs are permuted among the
                        edges of each block, so block totals are kept and which
                        partner gets many synapses is not
:func:`random_graph`    node table; the whole graph's edge count and edge attributes;  no
                        edges uniform over all ordered pairs, so blocks (and compiled
                        projections) get the global density, not their own
:func:`label_shuffle`   every edge and every cell's position and layer; it permutes    no
                        the labels (``cell_type``, ``mtype``, ``ei``) among the cells
                        of each layer. What changes: which cells form each column
                        layer (a "4P" layer becomes a random set of L4 cells), hence
                        each projection's edge count and synapse total (the wiring
                        between those cells is whatever the connectome has), and which
                        cells are inhibitory, hence each cell's inhibitory input
======================  =============================================================  =========

:func:`random_type_graph` is :func:`random_graph`'s counterpart for a type-level graph.
Everything is drawn from ``numpy.random.default_rng(seed)``. The result's ``meta`` records
``null_model`` and ``seed``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from connectomics.graph import ConnectomeGraph, population_key
from connectomics.stats import connection_probability, possible_pairs


def _with_edges(graph: ConnectomeGraph, pre: np.ndarray, post: np.ndarray,
                attrs: pd.DataFrame, meta: dict) -> ConnectomeGraph:
    root = graph.nodes["root_id"].to_numpy()
    order = np.lexsort((post, pre))
    pre, post = pre[order], post[order]
    attrs = attrs.iloc[order].reset_index(drop=True)
    edges = pd.DataFrame({
        "pre": pre.astype(np.int64), "post": post.astype(np.int64),
        "pre_root_id": root[pre].astype(np.int64), "post_root_id": root[post].astype(np.int64),
        "n_synapses": attrs["n_synapses"].to_numpy().astype(np.int64),
        "summed_size": attrs["summed_size"].to_numpy().astype(np.float64),
    })
    return ConnectomeGraph(nodes=graph.nodes.copy(), edges=edges, meta={**graph.meta, **meta})


def random_graph(graph: ConnectomeGraph, seed: int = 0) -> ConnectomeGraph:
    """Density-matched random graph: as many edges as ``graph``, placed uniformly at random over
    the ordered pairs ``i != j`` (no duplicates), with the original edges' attributes in random
    order."""
    rng = np.random.default_rng(seed)
    n, m = graph.n_nodes, len(graph.edges)
    possible = possible_pairs(n, n, same_population=True)
    if m > possible:
        raise ValueError(f"{m} edges do not fit {n} nodes without autapses")
    k = rng.choice(possible, size=m, replace=False) if m else np.zeros(0, dtype=np.int64)
    pre = k // max(n - 1, 1)
    r = k % max(n - 1, 1)
    post = r + (r >= pre)
    attrs = graph.edges[["n_synapses", "summed_size"]].iloc[rng.permutation(m)]
    return _with_edges(graph, pre, post, attrs, {"null_model": "random", "seed": int(seed)})


def _populations(graph: ConnectomeGraph) -> np.ndarray:
    """``(n,)`` integer population code of every cell (population = ``cell_type|layer``)."""
    pop = [population_key(t, l) for t, l in zip(graph.nodes["cell_type"].astype(str),
                                                graph.nodes["layer"].astype(str))]
    return pd.factorize(pd.Series(pop, dtype=object))[0]


def _blocks(graph: ConnectomeGraph) -> tuple[np.ndarray, np.ndarray]:
    """``(pop, block)``: each cell's population code and each edge's block code (pre-population
    x post-population)."""
    pop = _populations(graph)
    n_pop = int(pop.max()) + 1 if len(pop) else 1
    e = graph.edges
    return pop, pop[e["pre"].to_numpy()] * n_pop + pop[e["post"].to_numpy()]


def block_random(graph: ConnectomeGraph, seed: int = 0) -> ConnectomeGraph:
    """Block-matched random graph: in every pre-population x post-population block, as many
    edges as the connectome's, placed uniformly at random over the block's ordered pairs
    (``i != j``, no duplicates), carrying that block's (``n_synapses``, ``summed_size``) pairs
    in random order. Every block (so every compiled projection) keeps its edge count and its
    synapse total; who connects to whom within a block is random."""
    rng = np.random.default_rng(seed)
    pop, block = _blocks(graph)
    members = pd.Series(np.arange(len(pop))).groupby(pop).apply(np.asarray).to_dict()
    e = graph.edges
    pre_parts, post_parts, attr_parts = [], [], []
    for b in np.unique(block):
        idx = np.flatnonzero(block == b)
        ex = e.iloc[idx[0]]
        P, Q = pop[int(ex["pre"])], pop[int(ex["post"])]
        src, dst = members[P], members[Q]
        ns, nd, m = len(src), len(dst), len(idx)
        same = P == Q
        possible = ns * (nd - 1) if same else ns * nd
        if m > possible:  # pragma: no cover - a graph without duplicate edges cannot exceed it
            raise ValueError(f"block {P}->{Q}: {m} edges do not fit {possible} pairs")
        k = rng.choice(possible, size=m, replace=False)
        if same:   # pairs (a, c) with c != a: c runs over the other nd - 1 cells
            a, r = np.divmod(k, nd - 1)
            c = r + (r >= a)
        else:
            a, c = np.divmod(k, nd)
        pre_parts.append(src[a])
        post_parts.append(dst[c])
        attr_parts.append(e[["n_synapses", "summed_size"]].iloc[idx[rng.permutation(m)]])
    if pre_parts:
        pre, post = np.concatenate(pre_parts), np.concatenate(post_parts)
        attrs = pd.concat(attr_parts, ignore_index=True)
    else:
        pre = post = np.zeros(0, dtype=np.int64)
        attrs = e[["n_synapses", "summed_size"]].iloc[:0]
    return _with_edges(graph, pre, post, attrs, {"null_model": "block_random", "seed": int(seed)})


def weight_shuffle(graph: ConnectomeGraph, seed: int = 0) -> ConnectomeGraph:
    """Weight shuffle: the topology (every edge) kept; the (``n_synapses``, ``summed_size``)
    pairs permuted among the edges of each pre-population x post-population block."""
    rng = np.random.default_rng(seed)
    _, block = _blocks(graph)
    e = graph.edges
    order = np.arange(len(e))
    for b in np.unique(block):
        idx = np.flatnonzero(block == b)
        order[idx] = idx[rng.permutation(len(idx))]
    attrs = e[["n_synapses", "summed_size"]].iloc[order]
    return _with_edges(graph, e["pre"].to_numpy(), e["post"].to_numpy(), attrs,
                       {"null_model": "weight_shuffle", "seed": int(seed)})


def degree_shuffle(graph: ConnectomeGraph, seed: int = 0, swaps_per_edge: float = 10.0) -> ConnectomeGraph:
    """Degree-preserving shuffle: double-edge swaps ``(a->b, c->d) -> (a->d, c->b)`` between
    edges of the same pre-population x post-population block (population = cell type | layer),
    rejecting swaps that would create an autapse or a duplicate edge.

    Runs ``2 * swaps_per_edge`` rounds; each round pairs the edges of every block at random and
    applies all non-conflicting swaps at once, so about ``swaps_per_edge`` swaps per edge are
    proposed. The meta records the accepted count.
    """
    rng = np.random.default_rng(seed)
    e = graph.edges
    pre = e["pre"].to_numpy().astype(np.int64).copy()
    post = e["post"].to_numpy().astype(np.int64).copy()
    m, n = len(pre), graph.n_nodes
    _, block = _blocks(graph)
    accepted = 0
    for _ in range(int(round(2 * swaps_per_edge))):
        if m < 2:
            break
        order = np.lexsort((rng.random(m), block))
        b_sorted = block[order]
        start = np.r_[0, np.flatnonzero(np.diff(b_sorted)) + 1]
        size = np.diff(np.r_[start, m])
        pos = np.arange(m) - np.repeat(start, size)
        size_of = np.repeat(size, size)
        first = (pos % 2 == 0) & (pos + 1 < size_of)
        ia = order[np.flatnonzero(first)]
        ib = order[np.flatnonzero(first) + 1]
        a_pre, a_post, b_pre, b_post = pre[ia], post[ia], pre[ib], post[ib]
        ok = (a_pre != b_pre) & (a_post != b_post) & (a_pre != b_post) & (b_pre != a_post)
        key_a, key_b = a_pre * n + b_post, b_pre * n + a_post
        current = pre * n + post
        ok &= ~np.isin(key_a, current) & ~np.isin(key_b, current)
        new_keys = np.concatenate([key_a[ok], key_b[ok]])
        uniq, counts = np.unique(new_keys, return_counts=True)
        dup = uniq[counts > 1]
        if len(dup):
            ok_idx = np.flatnonzero(ok)
            clash = np.isin(key_a[ok_idx], dup) | np.isin(key_b[ok_idx], dup)
            ok[ok_idx[clash]] = False
        post[ia[ok]], post[ib[ok]] = b_post[ok], a_post[ok]
        accepted += int(ok.sum())
    return _with_edges(graph, pre, post, e[["n_synapses", "summed_size"]],
                       {"null_model": "degree_shuffle", "seed": int(seed),
                        "swaps_accepted": accepted})


def label_shuffle(graph: ConnectomeGraph, seed: int = 0, within_layer: bool = True) -> ConnectomeGraph:
    """Type-label shuffle: permute ``(cell_type, mtype, ei)`` among the cells of each layer
    (``within_layer=False``: among all cells). Edges, positions and layers stay; the type counts
    per layer stay. Not matched per projection: a column layer selected by type becomes a random
    set of cells of the same cortical layers, so its projections carry the connectome's wiring
    between *those* cells (another edge count and synapse total), and E/I labels move, so each
    cell's inhibitory input changes too."""
    rng = np.random.default_rng(seed)
    nodes = graph.nodes.copy()
    fields = ["cell_type", "mtype", "ei"]
    groups = nodes.groupby("layer", sort=True).indices.values() if within_layer \
        else [np.arange(len(nodes))]
    for idx in groups:
        idx = np.asarray(idx)
        perm = idx[rng.permutation(len(idx))]
        nodes.loc[idx, fields] = nodes.loc[perm, fields].to_numpy()
    return ConnectomeGraph(nodes=nodes, edges=graph.edges.copy(),
                           meta={**graph.meta, "null_model": "label_shuffle", "seed": int(seed),
                                 "within_layer": bool(within_layer)})


def random_type_graph(type_graph: nx.DiGraph) -> nx.DiGraph:
    """The type-level counterpart of :func:`random_graph`: every ordered population pair (a
    population with itself included) gets the whole graph's connection probability
    (:func:`connectomics.stats.connection_probability` over all cells, autapses excluded), so
    masks sampled from it are density-matched and uniform. Pairs that were connected keep their
    other attributes; new pairs have ``connected_pairs = n_synapses = 0``."""
    n = sum(d["n_cells"] for _, d in type_graph.nodes(data=True))
    pairs = sum(e.get("connected_pairs", 0) for _, _, e in type_graph.edges(data=True))
    p = connection_probability(pairs, n, n, same_population=True)
    out = type_graph.copy()
    for a in type_graph:
        for b in type_graph:
            if out.has_edge(a, b):
                out.edges[a, b]["connection_probability"] = p
            else:
                out.add_edge(a, b, connection_probability=p, connected_pairs=0, n_synapses=0,
                             summed_size=0.0)
    out.graph = {**type_graph.graph, "null_model": "random"}
    return out


NULL_MODELS = {"random": random_graph, "block_random": block_random,
               "degree_shuffle": degree_shuffle, "weight_shuffle": weight_shuffle,
               "label_shuffle": label_shuffle}
#: the null models that keep every block's (so every compiled projection's) edge count and
#: synapse total
MATCHED_NULL_MODELS = ("block_random", "degree_shuffle", "weight_shuffle")
#: null models of a type-level graph (masks are then sampled from it with the spec's seed)
TYPE_NULL_MODELS = {"random": random_type_graph}
