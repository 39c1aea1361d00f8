"""connectomics.stats: one definition of connection probability, used by every table."""

from __future__ import annotations

import numpy as np
import pytest

from connectomics import plots as P
from connectomics import stats as S
from connectomics.build import summary


def test_possible_pairs_and_connection_probability():
    assert S.possible_pairs(3, 4) == 12
    assert S.possible_pairs(3, 3, same_population=True) == 6   # autapses left out
    assert S.connection_probability(3, 3, 4) == pytest.approx(0.25)
    assert S.connection_probability(3, 3, 3, True) == pytest.approx(0.5)
    assert S.connection_probability(0, 1, 1, True) == 0.0        # no possible pair
    assert np.isnan(S.connection_probability(0, 0, 5, empty=float("nan")))
    size = np.array([2, 5])
    same = np.eye(2, dtype=bool)
    np.testing.assert_array_equal(S.possible_pairs(size[:, None], size[None, :], same),
                                  [[2, 10], [10, 20]])
    np.testing.assert_allclose(S.connection_probability(np.array([[1, 5], [2, 4]]), size[:, None],
                                                        size[None, :], same),
                               [[0.5, 0.5], [0.2, 0.2]])


def test_every_table_uses_the_same_connection_probability(surrogate_graph):
    g = surrogate_graph.graph
    nodes, e = g.nodes, g.edges
    # type graph edges: brute force from the neuron-level edges
    pop = (nodes["cell_type"] + "|" + nodes["layer"]).to_numpy()
    pre, post = pop[e["pre"].to_numpy()], pop[e["post"].to_numpy()]
    size = nodes.groupby(["cell_type", "layer"]).size()
    tg = g.type_graph
    for a, b in [("23P|L2/3", "23P|L2/3"), ("4P|L4", "23P|L2/3"), ("BC|L2/3", "23P|L2/3")]:
        na, nb = size[tuple(a.split("|"))], size[tuple(b.split("|"))]
        want = ((pre == a) & (post == b)).sum() / (na * nb - (na if a == b else 0))
        assert tg.edges[a, b]["connection_probability"] == pytest.approx(want)
    # whole-graph density in the build summary, E/I classes, layer table over all cells
    n = g.n_nodes
    assert S.density(g) == pytest.approx(len(e) / (n * (n - 1)))
    assert f"density: {S.density(g):.4f}" in summary(g)
    ei = S.ei_connection_probability(g)
    assert f"E->E {ei['E->E']:.4f}" in summary(g)
    everyone = S.layer_table(g, pre_ei=None)
    assert everyone["connected_pairs"].sum() / everyone["possible_pairs"].sum() == pytest.approx(S.density(g))


def test_every_value_has_a_label():
    assert set(P.VALUE_LABELS) == set(S.VALUES)


def test_connectivity_by_mtype_groups_the_neuron_level_graph(column_graph):
    """by="mtype" (any node column): connected pairs / possible pairs of the m-type groups."""
    from connectomics import stats

    g = column_graph.graph
    table = stats.connectivity_table(g, "connection_probability", by="mtype")
    m = g.nodes["mtype"].astype(str).to_numpy()
    pre, post = m[g.edges["pre"].to_numpy()], m[g.edges["post"].to_numpy()]
    n = g.nodes["mtype"].astype(str).value_counts()
    assert set(table.index) == set(n.index) and len(table) == 22
    for a, b in [("ITC", "DTC"), ("L4b", "L3b"), ("PTC", "PTC")]:
        possible = n[a] * n[b] - (n[a] if a == b else 0)
        assert table.loc[a, b] == pytest.approx(((pre == a) & (post == b)).sum() / possible)
    syn = stats.connectivity_table(g, "n_synapses", by="mtype")
    assert syn.to_numpy().sum() == g.edges["n_synapses"].sum() == 141_452
    with pytest.raises(ValueError, match="node column"):
        stats.connectivity_table(g, by="nope")


def test_population_key_names_one_population_or_every_row():
    import pandas as pd

    from connectomics import population_key

    assert population_key("23P", "L2/3") == "23P|L2/3"
    nodes = pd.DataFrame({"cell_type": ["4P", "BC"], "layer": ["L4", "L5"]}, index=[7, 3])
    keys = population_key(nodes["cell_type"], nodes["layer"])
    assert keys.tolist() == ["4P|L4", "BC|L5"] and keys.index.tolist() == [7, 3]
    assert population_key(np.array(["MC"]), ["L6"]).tolist() == ["MC|L6"]
