"""compile_column: populations, masks from the graph, round trip, backends, switches, training."""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
import numpy as np
import pytest
import torch

from connectomics import population_key
from connectomics.stats import density
from graphnet import ColumnSpec, CorticalColumn, GradedInhibition, MaskedLinear, SparseLinear, compile_column
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


IN = 16


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph(seed=0)


@pytest.fixture(scope="module")
def column(graph):
    return compile_column(graph, ColumnSpec.bionic(), in_features=IN)


def test_layers_are_the_types_in_their_layer(graph, column):
    assert isinstance(column, CorticalColumn)
    sizes = {k: l.size for k, l in column.layers.items()}
    assert sizes == {"A": 20, "B": 26, "C": 16, "D": 22}  # by type: the 23P in L4 are in B
    assert column.out_features == 22 and column.in_features == IN
    units = column.layer_plans["B"].unit_ids
    assert set(graph.nodes.loc[units, "cell_type"]) == {"23P"}
    assert set(graph.nodes.loc[units, "layer"]) == {"L2/3", "L4"}
    c = column.layer_plans["C"]
    assert c.populations == ["5P-IT|L5", "5P-ET|L5", "5P-NP|L5"] and c.population_sizes == [8, 5, 3]
    assert isinstance(column.layers["A"].projections["input"], torch.nn.Linear)
    assert column.layers["A"].projections["input"].weight.shape == (20, IN)
    assert column(torch.randn(5, IN)).shape == (5, 22)


def test_masks_are_the_observed_synapses(graph, column):
    adj = graph.adjacency("n_synapses").toarray()  # (pre, post)
    for (src, dst) in [("A", "B"), ("B", "C"), ("C", "D"), ("B", "B")]:
        pre = column.layer_plans[src].unit_ids
        post = column.layer_plans[dst].unit_ids
        expect = torch.as_tensor(adj[np.ix_(pre, post)].T > 0)
        assert torch.equal(column.projection(src, dst).mask.cpu(), expect), (src, dst)
    # min_synapses filters weak pairs
    strong = compile_column(graph, ColumnSpec.bionic(min_synapses=3), in_features=IN)
    pre, post = column.layer_plans["A"].unit_ids, column.layer_plans["B"].unit_ids
    expect = torch.as_tensor(adj[np.ix_(pre, post)].T >= 3)
    assert torch.equal(strong.projection("A", "B").mask.cpu(), expect)
    assert expect.sum() < column.projection("A", "B").mask.sum()


def test_to_networkx_round_trip(graph, column):
    out = column.to_networkx()
    cells = [u for p in column.layer_plans.values() for u in p.unit_ids]
    layer_of = {u: name for name, p in column.layer_plans.items() for u in p.unit_ids}
    blocks = set(column.spec.projections) | {(n, n) for n in column.spec.layer_names}
    ref = graph.to_networkx().subgraph(cells)
    ref_edges = {(a, b): d for a, b, d in ref.edges(data=True) if (layer_of[a], layer_of[b]) in blocks}
    assert set(out.nodes) == set(cells)
    assert set(out.edges) == set(ref_edges)
    for (a, b), d in ref_edges.items():
        e = out.edges[a, b]
        assert e["n_synapses"] == d["n_synapses"] and e["summed_size"] == pytest.approx(d["summed_size"])
        assert e["weight"] >= 0
    for u in cells:
        assert out.nodes[u]["cell_type"] == graph.nodes.loc[u, "cell_type"]
    # the sparse backend exports the same graph
    sp = compile_column(graph, ColumnSpec.bionic(backend="sparse"), in_features=IN).to_networkx()
    assert nx.utils.edges_equal(sorted(sp.edges), sorted(out.edges))


def test_dense_and_sparse_columns_are_identical(graph):
    spec = ColumnSpec.bionic(noise_std=0.0)
    d = compile_column(graph, spec.replace(backend="dense"), in_features=IN)
    s = compile_column(graph, spec.replace(backend="sparse"), in_features=IN)
    assert all(isinstance(s.projection(*k.split("->")), SparseLinear) for k in s.projection_plans)
    assert all(isinstance(d.projection(*k.split("->")), MaskedLinear) for k in d.projection_plans)
    x = torch.randn(7, IN)
    yd, ys = d(x), s(x)
    torch.testing.assert_close(ys, yd, rtol=1e-5, atol=1e-5)
    yd.pow(2).sum().backward()
    ys.pow(2).sum().backward()
    torch.testing.assert_close(s.layers["A"].projections["input"].weight.grad,
                               d.layers["A"].projections["input"].weight.grad, rtol=1e-4, atol=1e-5)
    for key in d.projection_plans:
        md, ms = d.projection(*key.split("->")), s.projection(*key.split("->"))
        rows, cols = md.mask.nonzero(as_tuple=True)
        torch.testing.assert_close(ms.weight.grad, md.weight.grad[rows, cols], rtol=1e-4, atol=1e-5)


def test_print_shows_populations_sizes_densities_backends(column):
    text = repr(column)
    for s in ("4P|L4 (20)", "5P-IT|L5 (8)", "6P-CT|L6 (12)", "A->B", "D->D (intra)", "density",
              "backend", "dense", "mask=connectome"):
        assert s in text, s
    layers, projs = column.summary()
    assert projs.set_index("projection").loc["A->B", "density"] == pytest.approx(
        column.projection("A", "B").density, abs=1e-4)


def test_summary_names_each_population_once_on_the_real_column(column_graph):
    """The README's first example: on the real column a type's cells of different layers
    interleave in unit order, and the summary still lists each population once."""
    graph = column_graph.graph
    col = compile_column(graph, ColumnSpec.bionic(), in_features=1024)
    layers, _ = col.summary()
    for name, text in zip(layers["layer"], layers["populations"]):
        entries = [re.fullmatch(r"(\S+) \((\d+)\)", e) for e in text.split(", ")]
        assert all(entries), text
        counts = {m[1]: int(m[2]) for m in entries}
        assert len(counts) == len(entries), text        # at most one entry per population
        nodes = graph.nodes.iloc[col.layer_plans[name].unit_ids]
        assert counts == Counter(population_key(t, l) for t, l in zip(nodes["cell_type"], nodes["layer"]))
    assert layers.set_index("layer").loc["A", "populations"] == "4P|L2/3 (55), 4P|L4 (211)"
    line_a = next(l for l in repr(col).splitlines() if l.split()[:1] == ["A"])
    assert line_a.endswith("4P|L2/3 (55), 4P|L4 (211)")


def test_same_seed_same_column_other_seed_differs(graph):
    a = compile_column(graph, ColumnSpec.bionic(seed=3), in_features=IN).state_dict()
    b = compile_column(graph, ColumnSpec.bionic(seed=3), in_features=IN).state_dict()
    c = compile_column(graph, ColumnSpec.bionic(seed=4), in_features=IN).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.B.projections.A.weight"], c["layers.B.projections.A.weight"])


def test_noise_only_in_training(graph):
    col = compile_column(graph, ColumnSpec.bionic(noise_std=0.5), in_features=IN)
    x = torch.randn(4, IN)
    col.eval()
    assert torch.equal(col(x), col(x))
    col.train()
    assert not torch.equal(col(x), col(x))


def test_switches(graph):
    base = ColumnSpec.bionic(noise_std=0.0)
    off = compile_column(graph, base.replace(intra_layer=False, graded_inhibition=False,
                                             layer_norm=False, dale=False), in_features=IN)
    assert all(l.intra is None for l in off.layers.values())
    assert all(isinstance(l.inhibition, torch.nn.Identity) for l in off.layers.values())
    assert all(isinstance(l.norm, torch.nn.Identity) for l in off.layers.values())
    assert off.projection("A", "B").sign is None
    assert (off.projection("A", "B").effective_weight() < 0).any()  # no Dale: both signs
    on = compile_column(graph, base, in_features=IN)
    gi = on.layers["A"].inhibition
    assert isinstance(gi, GradedInhibition)
    from graphnet import inhibitory_input
    c = inhibitory_input(graph, on.layer_plans["A"].unit_ids)
    torch.testing.assert_close(gi.gain, torch.as_tensor(1 - 0.5 * c / c.max(), dtype=torch.float32))
    # the inhibition gain really scales the output: with strength 0 the activity is larger
    flat = compile_column(graph, base.replace(inhibition_strength=0.0), in_features=IN)
    x = torch.randn(64, IN)
    assert flat(x).sum() > on(x).sum()


def test_null_model_and_dense_masks(graph, column):
    rnd = compile_column(graph, ColumnSpec.bionic(mask="random"), in_features=IN)
    assert [l.size for l in rnd.layers.values()] == [l.size for l in column.layers.values()]
    assert not torch.equal(rnd.projection("A", "B").mask, column.projection("A", "B").mask)
    lab = compile_column(graph, ColumnSpec.bionic(mask="label_shuffle"), in_features=IN)
    assert [l.size for l in lab.layers.values()] == [l.size for l in column.layers.values()]
    dense = compile_column(graph, ColumnSpec.bionic(mask="dense"), in_features=IN)
    assert bool(dense.projection("A", "B").mask.all())
    m = dense.projection("B", "B").mask
    assert not bool(m.diagonal().any()) and int(m.sum()) == 26 * 25
    assert "random null model" in repr(rnd)


def test_weight_init_by_synapse_count(graph):
    col = compile_column(graph, ColumnSpec.bionic(weight_init="synapse_count", dale=False),
                         in_features=IN)
    pp = col.projection_plans["B->C"]
    w = col.projection("B", "C").effective_weight().detach()
    mag = w[pp.post, pp.pre].abs().numpy()
    # |w| = sigma * |U(-sqrt3, sqrt3)| with sigma proportional to the pair's synapse count
    big = pp.n_synapses >= 4
    assert mag[big].mean() > 1.5 * mag[pp.n_synapses == 1].mean()


def test_type_graph_masks_follow_connection_probabilities():
    pops = {("4P", "L4"): 150, ("23P", "L2/3"): 150, ("BC", "L2/3"): 20}
    p = {("4P", "23P"): 0.3, ("23P", "23P"): 0.1, ("BC", "23P"): 0.5}
    g = synthetic_graph(pops, p=p, seed=2)
    spec = ColumnSpec(layers=ColumnSpec.bionic().layers[:2], projections=(("A", "B"),), name="ab")
    col = compile_column(g.type_graph, spec, in_features=IN)
    tg = g.type_graph
    assert col.projection("A", "B").density == pytest.approx(
        tg.edges["4P|L4", "23P|L2/3"]["connection_probability"], abs=0.02)
    assert col.projection("B", "B").density == pytest.approx(
        tg.edges["23P|L2/3", "23P|L2/3"]["connection_probability"] * (149 / 150), abs=0.01)
    assert not bool(col.projection("B", "B").mask.diagonal().any())
    assert col.layers["B"].size == 150
    again = compile_column(g.type_graph, spec, in_features=IN)
    assert torch.equal(again.projection("A", "B").mask, col.projection("A", "B").mask)
    with pytest.raises(ValueError, match="neuron-level"):
        compile_column(g.type_graph, spec.replace(mask="degree_shuffle"), in_features=IN)
    # the random null model: every block at the whole graph's density, BC inhibition unchanged
    rnd = compile_column(g.type_graph, spec.replace(mask="random"), in_features=IN)
    p_all = density(g)
    assert rnd.projection("A", "B").density == pytest.approx(p_all, abs=0.01)
    assert rnd.projection("B", "B").density == pytest.approx(p_all * 149 / 150, abs=0.01)
    np.testing.assert_array_equal(rnd.layer_plans["B"].inhibitory_input,
                                  col.layer_plans["B"].inhibitory_input)


def test_overlapping_or_empty_layers_are_errors(graph):
    from graphnet import LayerSpec
    with pytest.raises(ValueError, match="share"):
        compile_column(graph, ColumnSpec(layers=(LayerSpec("A", ("4P",), ("L4",)),
                                                 LayerSpec("B", ("4P", "23P"), ("L4",))),
                                         projections=(("A", "B"),)), in_features=IN)
    with pytest.raises(ValueError, match="no cells"):
        compile_column(graph, ColumnSpec(layers=(LayerSpec("A", ("4P",), ("L6",)),),
                                         projections=()), in_features=IN)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_training_keeps_masks_and_dale_and_checkpoints(graph, backend, tmp_path):
    torch.manual_seed(0)
    col = compile_column(graph, ColumnSpec.bionic(backend=backend, hebbian_rate=1e-3), in_features=IN)
    head = torch.nn.Linear(col.out_features, 3)
    opt = torch.optim.AdamW(list(col.parameters()) + list(head.parameters()), lr=1e-2, weight_decay=0.05)
    x = torch.randn(128, IN)
    t = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    masks = {k: col.projection(*k.split("->")).mask.clone() for k in col.projection_plans}
    col.train()
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(col(x)), t)
        loss.backward()
        opt.step()
        col.plasticity_step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    for k, m in masks.items():
        mod = col.projection(*k.split("->"))
        assert torch.equal(mod.mask, m)
        assert torch.all(mod.effective_weight() >= 0)  # all compiled cells are excitatory
        if isinstance(mod, MaskedLinear):
            assert torch.all(mod.weight[~m] == 0)
    path = tmp_path / "col.pt"
    torch.save(col.state_dict(), path)
    fresh = compile_column(graph, ColumnSpec.bionic(backend=backend, hebbian_rate=1e-3, seed=9),
                           in_features=IN)
    fresh.load_state_dict(torch.load(path))
    col.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), col(x))
