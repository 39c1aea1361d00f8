"""Graded inhibition from the graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from connectomics.graph import ConnectomeGraph
from graphnet import GradedInhibition, inhibitory_input
from graphnet.inhibition import population_inhibitory_input
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
