"""Null models keep what they claim to keep, and change the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connectomics.stats import density
from graphnet import block_random, degree_shuffle, label_shuffle, random_graph, weight_shuffle
from graphnet.null_models import random_type_graph
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph(p=0.2, seed=11)


def _pairs(g):
    return set(zip(g.edges["pre"].tolist(), g.edges["post"].tolist()))


def _well_formed(g):
    pre, post = g.edges["pre"].to_numpy(), g.edges["post"].to_numpy()
    assert not np.any(pre == post)
    assert len(_pairs(g)) == len(g.edges)
    root = g.nodes["root_id"].to_numpy()
    assert np.array_equal(g.edges["pre_root_id"].to_numpy(), root[pre])
    assert np.array_equal(g.edges["post_root_id"].to_numpy(), root[post])


def _blocks(g):
    pop = (g.nodes["cell_type"] + "|" + g.nodes["layer"]).to_numpy()
    return pd.Series(list(zip(pop[g.edges["pre"]], pop[g.edges["post"]]))).value_counts().sort_index()


def test_random_graph_keeps_edge_count_and_attributes(graph):
    r = random_graph(graph, seed=0)
    _well_formed(r)
    assert len(r.edges) == len(graph.edges)
    pd.testing.assert_frame_equal(r.nodes, graph.nodes)
    assert sorted(r.edges["n_synapses"]) == sorted(graph.edges["n_synapses"])
    assert len(_pairs(r) & _pairs(graph)) < 0.4 * len(graph.edges)  # ~ density (0.2) overlap
    assert r.meta["null_model"] == "random"
    assert _pairs(random_graph(graph, seed=0)) == _pairs(r)
    assert _pairs(random_graph(graph, seed=1)) != _pairs(r)


def test_degree_shuffle_keeps_degrees_and_blocks(graph):
    d = degree_shuffle(graph, seed=0)
    _well_formed(d)
    assert len(d.edges) == len(graph.edges)
    n = graph.n_nodes
    for col in ("pre", "post"):
        assert np.array_equal(np.bincount(d.edges[col], minlength=n),
                              np.bincount(graph.edges[col], minlength=n)), col
    pd.testing.assert_series_equal(_blocks(d), _blocks(graph))
    # the type graph's connected pairs are therefore unchanged
    for a, b, e in graph.type_graph.edges(data=True):
        assert d.type_graph.edges[a, b]["connected_pairs"] == e["connected_pairs"]
    # each cell keeps its out-synapse multiset (attributes travel with the pre cell)
    key = lambda g: sorted(zip(g.edges["pre"], g.edges["n_synapses"]))  # noqa: E731
    assert key(d) == key(graph)
    changed = 1 - len(_pairs(d) & _pairs(graph)) / len(graph.edges)
    assert changed > 0.5, f"only {changed:.0%} of edges moved"
    assert d.meta["swaps_accepted"] > len(graph.edges)
    assert _pairs(degree_shuffle(graph, seed=0)) == _pairs(d)


def test_label_shuffle_keeps_type_counts_and_edges(graph):
    s = label_shuffle(graph, seed=0)
    pd.testing.assert_frame_equal(s.edges, graph.edges)
    count = lambda g: g.nodes.groupby(["layer", "cell_type"]).size()  # noqa: E731
    pd.testing.assert_series_equal(count(s), count(graph))
    assert (s.nodes["cell_type"] != graph.nodes["cell_type"]).sum() > 10
    # labels move together: every cell's ei matches its (new) type
    assert set(zip(s.nodes["cell_type"], s.nodes["ei"])) == set(zip(graph.nodes["cell_type"], graph.nodes["ei"]))
    assert (s.nodes["layer"] == graph.nodes["layer"]).all()
    a = label_shuffle(graph, seed=0, within_layer=False)
    assert a.nodes["cell_type"].value_counts().sort_index().equals(
        graph.nodes["cell_type"].value_counts().sort_index())


def test_random_type_graph_is_uniform_at_the_graph_density(graph):
    tg = graph.type_graph
    rnd = random_type_graph(tg)
    assert rnd.number_of_edges() == tg.number_of_nodes() ** 2 > tg.number_of_edges()
    p = {d["connection_probability"] for _, _, d in rnd.edges(data=True)}
    assert len(p) == 1 and p.pop() == pytest.approx(density(graph))
    # connected pairs keep their counts; new pairs carry none; the input is not changed
    for a, b, d in rnd.edges(data=True):
        assert d["connected_pairs"] == (tg.edges[a, b]["connected_pairs"] if tg.has_edge(a, b) else 0)
    assert len({d["connection_probability"] for _, _, d in tg.edges(data=True)}) > 1


def _block_synapses(g):
    pop = (g.nodes["cell_type"] + "|" + g.nodes["layer"]).to_numpy()
    key = pd.Series(list(zip(pop[g.edges["pre"]], pop[g.edges["post"]])))
    return g.edges["n_synapses"].groupby(key.to_numpy()).sum().sort_index()


def test_block_random_keeps_every_block_and_moves_edges(graph):
    b = block_random(graph, seed=0)
    _well_formed(b)
    pd.testing.assert_frame_equal(b.nodes, graph.nodes)
    pd.testing.assert_series_equal(_blocks(b), _blocks(graph))
    pd.testing.assert_series_equal(_block_synapses(b), _block_synapses(graph))
    assert sorted(zip(b.edges["n_synapses"], b.edges["summed_size"])) == \
        sorted(zip(graph.edges["n_synapses"], graph.edges["summed_size"]))
    changed = 1 - len(_pairs(b) & _pairs(graph)) / len(graph.edges)
    assert changed > 0.5, f"only {changed:.0%} of edges moved"
    # degrees are not kept (that is the degree shuffle's job)
    assert not np.array_equal(np.bincount(b.edges["post"], minlength=graph.n_nodes),
                              np.bincount(graph.edges["post"], minlength=graph.n_nodes))
    assert b.meta["null_model"] == "block_random"
    assert _pairs(block_random(graph, seed=0)) == _pairs(b)
    assert _pairs(block_random(graph, seed=1)) != _pairs(b)


def test_block_random_fills_a_complete_block_exactly():
    # every pair of a 3-cell population connected: the null can only place the same edges
    nodes = synthetic_graph(p=0.0, seed=0).nodes.iloc[:3].copy()
    nodes[["cell_type", "layer", "ei"]] = ["4P", "L4", "E"]
    pre, post = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 2, 0, 2, 0, 1])
    root = nodes["root_id"].to_numpy()
    from connectomics.graph import ConnectomeGraph
    g = ConnectomeGraph(nodes=nodes, edges=pd.DataFrame({
        "pre": pre, "post": post, "pre_root_id": root[pre], "post_root_id": root[post],
        "n_synapses": np.arange(1, 7), "summed_size": np.full(6, np.nan)}))
    b = block_random(g, seed=3)
    assert _pairs(b) == _pairs(g)
    assert sorted(b.edges["n_synapses"]) == list(range(1, 7))


def test_weight_shuffle_keeps_topology_and_block_totals(graph):
    w = weight_shuffle(graph, seed=0)
    assert _pairs(w) == _pairs(graph)
    pd.testing.assert_series_equal(_block_synapses(w), _block_synapses(graph))
    merged = graph.edges.merge(w.edges, on=["pre", "post"], suffixes=("", "_null"))
    assert len(merged) == len(graph.edges)
    assert (merged["n_synapses"] != merged["n_synapses_null"]).mean() > 0.2
    assert w.meta["null_model"] == "weight_shuffle"


def test_matched_nulls_keep_every_compiled_projection_on_the_real_column(column_graph):
    """On the real column, the matched nulls compile the connectome's edge count and synapse
    total for every projection of the paper's column; the unmatched ones do not."""
    from graphnet import ColumnSpec
    from graphnet.null_models import MATCHED_NULL_MODELS
    from graphnet.plan import plan_column

    def per_projection(mask, seed=1):
        _, projs = plan_column(column_graph.graph, ColumnSpec.bionic(mask=mask, seed=seed))
        return {p.key: (len(p.pre), int(p.n_synapses.sum())) for p in projs}

    real = per_projection("connectome")
    assert sum(e for e, _ in real.values()) == 19_724
    for mask in MATCHED_NULL_MODELS:
        for seed in (1, 2):
            assert per_projection(mask, seed) == real, (mask, seed)
    for mask in ("random", "label_shuffle"):
        assert per_projection(mask) != real, mask


def test_under_free_weights_the_weight_shuffle_differs_from_the_real_column_only_in_its_gains(column_graph):
    """The premise of pipelines/plans/inhibition_pattern.json: with free weights (fan-in
    initialisation) the paper's column reads synapse counts only through graded inhibition, so
    the weight shuffle compiles the same parameters and differs in the gain buffers alone, and
    with graded inhibition off the two columns are the same model."""
    import torch

    from graphnet import ColumnSpec, compile_column

    def state(**kw):
        return compile_column(column_graph.graph, ColumnSpec.bionic(seed=1, **kw), in_features=16).state_dict()

    real, shuffled = state(mask="connectome"), state(mask="weight_shuffle")
    assert real.keys() == shuffled.keys()
    differ = {k for k in real if not torch.equal(real[k], shuffled[k])}
    assert differ and all(k.endswith(("inhibition.gain", "inhibition.inhibitory_input")) for k in differ)
    # the shuffle lowers the mean gain of L4 and L2/3 (real: their most inhibited cells are outliers)
    for layer in ("A", "B"):
        assert float(shuffled[f"layers.{layer}.inhibition.gain"].mean()) < \
            float(real[f"layers.{layer}.inhibition.gain"].mean()) - 0.02, layer
    off_real = state(mask="connectome", graded_inhibition=False)
    off_shuffled = state(mask="weight_shuffle", graded_inhibition=False)
    assert off_real.keys() == off_shuffled.keys()
    assert all(torch.equal(off_real[k], off_shuffled[k]) for k in off_real)
