"""Weight schemes (free, counts, dense) and the recurrent E/I column: the effective weights are what
the schemes say, the dense and sparse backends agree, and bad specs fail naming the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from graphnet import ColumnSpec, compile_column
from graphnet.count_linear import CountLinear
from graphnet.plan import plan_network
from graphnet.recurrent import DynamicsDiverged
from graphnet.spectral import spectral_radius
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph(p=0.2, seed=5)


def _bionic(**kw):
    kw.setdefault("hebbian_rate", 0.0)
    return ColumnSpec.bionic(noise_std=0.0, **kw)


def _recurrent(**kw):
    return ColumnSpec.recurrent(noise_std=0.0, **kw)


def _outputs_and_grads(graph, spec, in_features=12, seed=0):
    col = compile_column(graph, spec, in_features=in_features).double()
    col.eval()
    x = torch.randn(5, in_features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = col(x)
    y.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in col.named_parameters() if p.grad is not None}
    return col, y.detach(), grads


def _same_grads(ga, gb, col_a, col_b):
    """Gradients agree, compared as dense effective quantities (dense and sparse store free weights
    differently: an (out, in) matrix vs one value per edge)."""
    for name in ga:
        a, b = ga[name], gb[name]
        if a.shape != b.shape:   # free weights: dense (out, in) vs sparse (E,) in CSR order
            mod_name = name.rsplit(".", 1)[0]
            sparse = dict(col_b.named_modules())[mod_name]
            rows, cols = sparse.edge_index[1], sparse.edge_index[0]
            a = a[rows, cols]
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize("weights", ["free", "counts", "dense"])
def test_feedforward_backends_agree_for_every_scheme(graph, weights):
    ya = _outputs_and_grads(graph, _bionic(weights=weights, backend="dense", seed=3))
    yb = _outputs_and_grads(graph, _bionic(weights=weights, backend="sparse", seed=3))
    torch.testing.assert_close(ya[1], yb[1])
    _same_grads(ya[2], yb[2], ya[0], yb[0])


@pytest.mark.parametrize("weights", ["free", "counts"])
def test_recurrent_backends_agree(graph, weights):
    ya = _outputs_and_grads(graph, _recurrent(weights=weights, backend="dense", seed=2))
    yb = _outputs_and_grads(graph, _recurrent(weights=weights, backend="sparse", seed=2))
    torch.testing.assert_close(ya[1], yb[1])
    _same_grads(ya[2], yb[2], ya[0], yb[0])


def test_counts_effective_weights_are_sign_times_count_times_scale(column_graph):
    """On the real column, every effective weight of every compiled projection is s_j n_ij g for
    its (post type, pre type) block, and nothing else is non-zero."""
    g = column_graph.graph
    for backend in ("dense", "sparse"):
        col = compile_column(g, _bionic(weights="counts", backend=backend, seed=1), in_features=8)
        with torch.no_grad():   # move the scales off their initial values
            for m in col.modules():
                if isinstance(m, CountLinear):
                    m.log_scale.add_(torch.linspace(-0.5, 0.5, m.n_blocks))
        for key, pp in col.projection_plans.items():
            w = col.effective_weight(pp.src, pp.dst).detach().double().numpy()
            src, dst = col.layer_plans[pp.src], col.layer_plans[pp.dst]
            mod = col.projection(pp.src, pp.dst)
            scales = mod.scales()
            sign = np.where(src.ei == "I", -1.0, 1.0)
            expect = np.zeros((pp.n_dst, pp.n_src))
            for a, b, n in zip(pp.pre, pp.post, pp.n_synapses):
                expect[b, a] = sign[a] * n * scales[f"{src.groups[a]}->{dst.groups[b]}"]
            np.testing.assert_allclose(w, expect, rtol=1e-5, err_msg=f"{backend} {key}")


def test_counts_column_has_population_squared_parameters(column_graph):
    g = column_graph.graph
    free = compile_column(g, _bionic(seed=1), in_features=32).parameter_counts()
    counts = compile_column(g, _bionic(weights="counts", seed=1), in_features=32).parameter_counts()
    assert counts["input"] == free["input"] == 32 * 266
    # A-D are grouped in 1 + 1 + 3 + 4 cell types: at most 1 + 3 + 12 + 1 + 1 + 9 + 16 pairs
    assert 0 < counts["projections"] <= 43
    assert counts["layers"] == 3 * (1 + 1 + 3 + 4)   # bias, LN gain, LN shift per type
    assert free["projections"] == 19_724                  # one weight per connection
    dense_storage = compile_column(g, _bionic(seed=1, backend="dense"), in_features=32)
    assert dense_storage.parameter_counts() == free       # masked entries are not parameters
    rec = compile_column(g, _recurrent(seed=1), in_features=32)
    n_types = len(rec.plan.population_names)
    assert rec.parameter_counts()["recurrent"] <= n_types ** 2
    assert rec.parameter_counts()["dynamics"] == 2 * n_types


def test_recurrent_column_covers_every_e_and_i_connection(column_graph):
    g = column_graph.graph
    col = compile_column(g, _recurrent(seed=1, backend="sparse"), in_features=16)
    assert col.n_units == 1351 and col.recurrent.n_edges == 75_251
    assert spectral_radius(col.weight()) == pytest.approx(0.9, rel=1e-4)
    w_bc = col.effective_weight("BC", "23P").detach()
    assert w_bc.shape == (349, 59) and (w_bc <= 0).all() and (w_bc < 0).any()
    w_e = col.effective_weight("23P", "BC").detach()
    assert (w_e >= 0).all() and (w_e > 0).any()
    assert (col.effective_weight("MC", "BC").detach() < 0).any()         # I -> I
    assert col.drive_units.numel() == 266 and col.out_features == 349 + 137 + 38 + 10
    x = torch.randn(4, 16)
    assert col(x).shape == (4, col.out_features)


def test_unstable_dynamics_name_the_step_and_population(graph):
    col = compile_column(graph, _recurrent(init_radius=60.0, layer_norm=False), in_features=6)
    with pytest.raises(DynamicsDiverged, match=r"Euler step \d+ of 10: population \S+ reached"):
        col(torch.full((3, 6), 10.0))


def test_network_plan_blocks_by_population_choice(graph):
    by_type = plan_network(graph)
    by_layer = plan_network(graph, populations="type_layer")
    assert set(by_type.population_names) == set(graph.nodes["cell_type"])
    assert "23P|L4" in by_layer.population_names and "23P|L2/3" in by_layer.population_names
    assert by_type.count_matrix().nnz == len(graph.edges)
    with pytest.raises(ValueError, match="no cells"):
        by_type.units_of(["XYZ"])


@pytest.mark.parametrize("field, value, message", [
    ("weights", "learned", "weights='learned'; choose one of"),
    ("dynamics", "spiking", "dynamics='spiking'"),
    ("populations", "family", "populations='family'"),
    ("steps", 0, "steps must be >= 1"),
    ("dt", 0.0, "dt must be > 0"),
    ("init_radius", -1.0, "init_radius must be > 0"),
    ("readout_steps", 99, "readout_steps must be in"),
])
def test_bad_recurrent_and_scheme_fields_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        _recurrent(**{field: value})


def test_scheme_combinations_that_mean_nothing_are_refused():
    with pytest.raises(ValueError, match="set hebbian_rate=0"):
        ColumnSpec.bionic(weights="counts")
    with pytest.raises(ValueError, match="mask='dense' has none"):
        _bionic(weights="counts", mask="dense")
    with pytest.raises(ValueError, match="keep mask='connectome'"):
        _bionic(weights="dense", mask="degree_shuffle")
    with pytest.raises(ValueError, match="set graded_inhibition=False"):
        _recurrent(graded_inhibition=True)


def test_counts_on_pairs_without_synapse_counts_is_an_error(graph):
    """A type-level graph's random null samples pairs that have no synapses per connection:
    counts cannot weight them, and the error names the projection."""
    tg = graph.type_graph
    col = compile_column(tg, _bionic(weights="counts", seed=1), in_features=4)   # counts known
    assert all(m.n_edges > 0 for m in col.modules() if isinstance(m, CountLinear))
    with pytest.raises(ValueError, match=r"projection \S+ has \d+ of \d+ connections without a synapse count"):
        compile_column(tg, _bionic(weights="counts", mask="random", seed=1), in_features=4)


def test_a_recurrent_layer_without_cells_is_an_error(graph):
    from graphnet import LayerSpec

    spec = _recurrent(layers=(LayerSpec("drive", ("4P",), None), LayerSpec("readout", ("WM-P",), None)))
    with pytest.raises(ValueError, match="layer 'readout': no cells"):
        compile_column(graph, spec, in_features=4)


def test_dense_scheme_connects_every_pair(graph):
    col = compile_column(graph, _bionic(weights="dense", seed=0), in_features=4)
    pp = col.projection_plans["A->B"]
    assert col.projection("A", "B").n_edges == pp.n_src * pp.n_dst
    assert pd.Series([m.n_edges for m in col.modules() if hasattr(m, "n_edges")]).sum() > 0
