"""Graded inhibition from the graph; lateral inhibition of conv feature maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from connectomics.graph import ConnectomeGraph
from graphnet import FastLateralInhibition2d, GradedInhibition, LateralInhibition2d, inhibitory_input
from graphnet.inhibition import DivisiveNorm075, lateral_window_kernel, population_inhibitory_input
from graphnet.testing import synthetic_graph
from graphnet.testing import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def _tiny_graph():
    # 0,1,2: E cells (4P|L4); 3,4: I cells (BC|L4)
    types = ["4P", "4P", "4P", "BC", "BC"]
    nodes = pd.DataFrame({
        "root_id": np.arange(5), "nucleus_id": np.arange(5), "cell_type": types, "mtype": types,
        "layer": ["L4"] * 5, "ei": ["E", "E", "E", "I", "I"],
        "x_nm": 0.0, "y_nm": 0.0, "z_nm": 0.0, "depth_um": 300.0,
    })
    rows = [  # pre, post, n_synapses
        (3, 0, 4), (4, 0, 2),   # cell 0: 6 inhibitory synapses from 2 cells
        (3, 1, 1),              # cell 1: 1 synapse from 1 cell
        (0, 2, 9), (1, 2, 9),   # cell 2: excitatory input only
        (0, 3, 1),
    ]
    e = pd.DataFrame(rows, columns=["pre", "post", "n_synapses"])
    e["pre_root_id"], e["post_root_id"], e["summed_size"] = e["pre"], e["post"], 1.0
    return ConnectomeGraph(nodes=nodes, edges=e)


def test_inhibitory_input_counts_synapses_and_cells():
    g = _tiny_graph()
    assert inhibitory_input(g, [0, 1, 2]).tolist() == [6.0, 1.0, 0.0]
    assert inhibitory_input(g, [0, 1, 2], measure="connections").tolist() == [2.0, 1.0, 0.0]
    assert inhibitory_input(g, [0, 1, 2], min_synapses=2).tolist() == [6.0, 0.0, 0.0]


def test_population_inhibitory_input_is_the_population_mean_of_the_cells():
    g = synthetic_graph(seed=3)
    tg = g.type_graph
    nodes = g.nodes
    for pop in ("23P|L2/3", "4P|L4", "BC|L2/3"):
        ct, layer = pop.split("|")
        cells = np.flatnonzero(((nodes["cell_type"] == ct) & (nodes["layer"] == layer)).to_numpy())
        for measure in ("n_synapses", "connections"):
            want = inhibitory_input(g, cells, measure).mean()
            assert want > 0
            assert population_inhibitory_input(tg, pop, measure) == pytest.approx(want), (pop, measure)
    with pytest.raises(ValueError, match="measure"):
        population_inhibitory_input(tg, "4P|L4", "weight")


def test_graded_inhibition_formula():
    gi = GradedInhibition(torch.tensor([6.0, 1.0, 0.0]), strength=0.5)
    # gain = 1 - 0.5 * c / max(c)
    torch.testing.assert_close(gi.gain, torch.tensor([0.5, 1 - 0.5 / 6, 1.0]))
    h = torch.ones(4, 3)
    torch.testing.assert_close(gi(h), gi.gain.expand(4, 3))
    assert torch.all(GradedInhibition(torch.zeros(3)).gain == 1)  # nobody inhibited
    with pytest.raises(ValueError):
        GradedInhibition(torch.tensor([-1.0]))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lateral_inhibition_equals_lrn_without_spatial_extent(size):
    x = torch.rand(2, 8, 5, 6)
    li = LateralInhibition2d(size=size, spatial=1, alpha=0.7, beta=0.75, k=1.5)
    lrn = torch.nn.LocalResponseNorm(size, alpha=0.7, beta=0.75, k=1.5)
    torch.testing.assert_close(li(x), lrn(x))


def test_lateral_inhibition_suppresses_by_active_neighbours():
    li = LateralInhibition2d(size=3, spatial=3, alpha=1.0, beta=1.0, k=1.0)
    x = torch.zeros(1, 5, 7, 7)
    x[0, 2, 3, 3] = 1.0
    alone = li(x)[0, 2, 3, 3].item()
    # divisor = 1 + 1 * (1 / 27): an isolated unit is barely changed
    assert alone == pytest.approx(1.0 / (1.0 + 1.0 / 27))
    x[0, 1, 3, 4] = 3.0   # a strongly active neighbour (adjacent channel and position)
    assert li(x)[0, 2, 3, 3].item() < 0.8 * alone
    x2 = torch.zeros(1, 5, 7, 7)
    x2[0, 2, 3, 3], x2[0, 2, 0, 0] = 1.0, 3.0   # far away (outside the 3x3 window): no effect
    assert li(x2)[0, 2, 3, 3].item() == pytest.approx(alone)
    assert li(x).shape == x.shape


def test_lateral_inhibition_validates():
    with pytest.raises(ValueError):
        LateralInhibition2d(size=4)
    with pytest.raises(ValueError):
        LateralInhibition2d()(torch.zeros(3, 4, 5))


def test_fast_lateral_inhibition_equals_the_reference_and_its_gradients():
    for c, size, spatial, beta in [(8, 5, 3, 0.75), (8, 3, 1, 0.5), (5, 1, 5, 0.75)]:
        ref = LateralInhibition2d(size=size, spatial=spatial, beta=beta, alpha=2.0, k=1.5)
        fast = FastLateralInhibition2d(c, size=size, spatial=spatial, beta=beta, alpha=2.0, k=1.5)
        assert isinstance(fast, LateralInhibition2d) and fast.state_dict() == {} == ref.state_dict()
        x = torch.randn(2, c, 8, 8, requires_grad=True)
        a, b = ref(x), fast(x)
        ga, = torch.autograd.grad(a.square().sum(), x)
        gb, = torch.autograd.grad(b.square().sum(), x)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-5)
        # another channel count takes the reference path
        y = torch.randn(2, c + 1, 5, 5)
        torch.testing.assert_close(fast(y), ref(y))
    # the hand-written backward, with a non-symmetric kernel to exercise the transpose
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 3, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: DivisiveNorm075.apply(t, w, 1.0, 2.0, 1), (x,))
    assert lateral_window_kernel(8, 5, 3)[0, :, 1, 1].tolist()[:4] == pytest.approx([1 / 45] * 3 + [0])


def test_fast_lateral_inhibition_equals_a_direct_loop():
    # the formula written out with loops (independent of avg_pool3d and conv2d)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    n, s, alpha, beta, k = 3, 3, 2.0, 0.75, 1.5
    expect = torch.empty_like(x)
    for c in range(4):
        for u in range(5):
            for v in range(5):
                tot = 0.0
                for c2 in range(c - n // 2, c + n // 2 + 1):
                    for u2 in range(u - s // 2, u + s // 2 + 1):
                        for v2 in range(v - s // 2, v + s // 2 + 1):
                            if 0 <= c2 < 4 and 0 <= u2 < 5 and 0 <= v2 < 5:
                                tot += float(x[0, c2, u2, v2]) ** 2
                expect[0, c, u, v] = x[0, c, u, v] / (k + alpha * tot / (n * s * s)) ** beta
    fast = FastLateralInhibition2d(4, size=n, spatial=s, alpha=alpha, beta=beta, k=k)
    torch.testing.assert_close(fast(x).double(), expect, atol=1e-5, rtol=1e-5)
