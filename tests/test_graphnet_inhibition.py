"""Graded inhibition from the graph; lateral inhibition of conv feature maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from connectomics.graph import ConnectomeGraph
from graphnet import GradedInhibition, LateralInhibition2d, inhibitory_input
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
