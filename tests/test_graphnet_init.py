"""The column's initialisation is fair across masks: a unit's summed input from upstream column
layers has the same mean and variance whatever its masked fan-in (dense, connectome, null models)
and whatever the sign of its inputs (Dale's law)."""

from __future__ import annotations

import math

import pytest
import torch

from graphnet import ColumnSpec, compile_column
from graphnet.projection import RELU_NORMAL_MEAN, RELU_NORMAL_VAR, summed_weight
from graphnet.testing import synthetic_graph

#: every layer of ColumnSpec.bionic(), excitatory only between layers (as on the real column)
SIZES = {("4P", "L4"): 60, ("23P", "L2/3"): 70, ("5P-IT", "L5"): 50, ("6P-IT", "L6"): 80,
         ("BC", "L4"): 8}


@pytest.fixture(scope="module")
def graph():
    return synthetic_graph(SIZES, p=0.08, seed=3)


def _feedforward_stats(column, n: int = 4096) -> dict[str, tuple[float, float, float]]:
    """Per layer fed by upstream column layers: (mean over units of the per-unit mean, mean
    per-unit variance, mean fan-in) of z = b + sum_src W_src x_src on x ~ ReLU(N(0, 1))."""
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        for name, layer in column.layers.items():
            srcs = [s for s in layer.projections if s != "input"]
            if not srcs:
                continue
            z = layer.bias.expand(n, -1).clone()
            for s in srcs:
                proj = layer.projections[s]
                x = torch.relu(torch.randn(n, proj.in_features, generator=g))
                z += proj(x)
            fan = sum(float(layer.projections[s].fan_in.float().mean()) for s in srcs)
            out[name] = (float(z.mean()), float(z.var(0).mean()), fan)
    return out


@pytest.mark.parametrize("dale", [True, False])
def test_units_start_alike_for_every_mask(graph, dale):
    stats = {m: _feedforward_stats(compile_column(graph, ColumnSpec.bionic(mask=m, dale=dale, seed=1),
                                                  in_features=16))
             for m in ("dense", "connectome", "random", "degree_shuffle")}
    # the masks really differ in fan-in (dense ~ 60-70 inputs, the others ~ 5)
    assert stats["dense"]["B"][2] > 8 * stats["connectome"]["B"][2]
    for m, per_layer in stats.items():
        for layer, (mean, var, _) in per_layer.items():
            # mean 0 whatever the fan-in; variance RELU_NORMAL_VAR * g^2 (g = 1), one source each
            assert abs(mean) < 0.06, (m, layer, mean)
            assert var == pytest.approx(RELU_NORMAL_VAR, rel=0.3), (m, layer, var)


def test_bias_removes_the_excitatory_mean_exactly(graph):
    """Without the correction a dense all-excitatory fan-in starts ~ sqrt(fan-in) times higher."""
    col = compile_column(graph, ColumnSpec.bionic(mask="dense", seed=1), in_features=16)
    layer = col.layers["C"]
    s = summed_weight(layer.projections["B"]).detach()
    assert bool((s > 0).all())                                    # Dale: all-excitatory input
    n = float(layer.projections["B"].fan_in.float().mean())
    assert float(s.mean()) == pytest.approx(math.sqrt(3) / 2 * math.sqrt(n), rel=0.1)
    assert torch.allclose(layer.bias, -RELU_NORMAL_MEAN * s)
    layer.bias.data.zero_()
    layer.reset_parameters()
    assert torch.allclose(layer.bias, -RELU_NORMAL_MEAN * s)


def test_dense_and_sparse_backends_get_the_same_bias(graph):
    d = compile_column(graph, ColumnSpec.bionic(backend="dense"), in_features=16)
    s = compile_column(graph, ColumnSpec.bionic(backend="sparse"), in_features=16)
    for name in d.layers:
        assert torch.allclose(d.layers[name].bias, s.layers[name].bias, atol=1e-6)
