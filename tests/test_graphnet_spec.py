"""ColumnSpec: presets, validation, JSON round trip, specs beyond the paper's."""

from __future__ import annotations

import json

import pytest

from graphnet import ColumnSpec, LayerSpec, chain, compile_column
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def test_bionic_layers_and_projections():
    s = ColumnSpec.bionic()
    assert s.layer_names == ("A", "B", "C", "D")
    assert [(l.cell_types, l.layers) for l in s.layers] == [
        (("4P",), None), (("23P",), None),  # by type, not by soma depth: the paper groups cells by type
        (("5P-IT", "5P-ET", "5P-NP"), None), (("6P-IT", "6P-CT", "6P-U", "WM-P"), None)]
    assert s.projections == (("A", "B"), ("B", "C"), ("C", "D"))
    assert s.output_layer == "D"
    assert s.intra_layer and s.dale and s.graded_inhibition and s.layer_norm and s.homeostasis
    assert s.hebbian_rate > 0 and s.noise_std > 0
    assert ColumnSpec.bionic(dale=False).dale is False


def test_json_round_trip_preserves_every_field():
    s = ColumnSpec.bionic(noise_std=0.25, mask="degree_shuffle", seed=7, weight_init="summed_size",
                          projections=(("A", "B"), ("A", "C"), ("B", "C"), ("C", "D")))
    d = json.loads(json.dumps(s.to_dict()))  # JSON types only
    assert ColumnSpec.from_dict(d) == s
    assert isinstance(d["layers"][2]["cell_types"], list)


@pytest.mark.parametrize("bad, match", [
    (dict(projections=(("B", "A"),)), "not feedforward"),
    (dict(projections=(("A", "B"), ("B", "Z"))), "unknown layer"),
    (dict(projections=(("A", "B"),)), "receive no projection"),
    (dict(mask="shuffled"), "mask="),
    (dict(backend="gpu"), "backend="),
    (dict(weight_init="xavier"), "weight_init="),
    (dict(inhibition_strength=1.5), "inhibition_strength"),
    (dict(min_synapses=0), "min_synapses"),
    (dict(noise_std=-0.1), "noise_std"),
    (dict(output="Q"), "output"),
])
def test_invalid_specs_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        ColumnSpec.bionic(**bad)


def test_unknown_field_in_dict_is_rejected():
    d = ColumnSpec.bionic().to_dict()
    d["dropout"] = 0.5
    with pytest.raises(ValueError, match="dropout"):
        ColumnSpec.from_dict(d)


def test_skip_path_and_mtype_layers_compile_without_code_changes():
    g = synthetic_graph(seed=3)
    skip = ColumnSpec.bionic(projections=(("A", "B"), ("B", "C"), ("A", "C"), ("C", "D")))
    col = compile_column(g, skip, in_features=8)
    assert set(col.layers["C"].projections) == {"B", "A"}
    # per m-type layers (the synthetic graph's m-type = its coarse type)
    mt = chain([LayerSpec("L4a", None, ("L4",), mtypes=("4P",)),
                LayerSpec("L23", None, ("L2/3",), mtypes=("23P",)),
                LayerSpec("L5et", None, ("L5",), mtypes=("5P-ET",))], name="mtypes")
    col = compile_column(g, mt, in_features=8)
    assert [l.size for l in col.layers.values()] == [20, 24, 5]
    assert col.out_features == 5
