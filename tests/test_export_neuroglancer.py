"""Neuroglancer states, parsed back with nglui's StateParser and neuroglancer's own URL parser:
sources per materialization, selected segments and their colours, soma points, selections, CLI."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import replace

import numpy as np
import pytest

from connectomics.export import neuroglancer_state, select_cells
from connectomics.export.neuroglancer import (
    DEFAULT_NEUROGLANCER_URL, GRAPHENE_SEGMENTATION, MINNIE65_IMAGE_SOURCE, STATIC_SEGMENTATIONS,
    TYPE_COLORS, type_color,
)

pytest.importorskip("nglui", reason="nglui builds the states")
from nglui.parser import StateParser  # noqa: E402


@pytest.fixture(scope="module")
def graph(surrogate_graph):
    return surrogate_graph.graph


@pytest.fixture(scope="module")
def l4(graph):
    return neuroglancer_state(graph, population="4P|L4")


def _source_url(layer: dict) -> str:
    src = layer["source"]
    src = src[0] if isinstance(src, list) else src
    return src["url"] if isinstance(src, dict) else src


def test_layers_and_sources(l4):
    layers = {layer["name"]: layer for layer in l4.state["layers"]}
    assert [(n, layer["type"]) for n, layer in layers.items()] == [
        ("em", "image"), ("seg", "segmentation"), ("somata", "annotation")]
    assert _source_url(layers["em"]) == MINNIE65_IMAGE_SOURCE
    # the surrogate has no materialization of its own: the default public release, v1300
    assert l4.version == 1300
    assert _source_url(layers["seg"]) == STATIC_SEGMENTATIONS[1300] == l4.segmentation
    assert l4.state["dimensions"] == {"x": [4e-09, "m"], "y": [4e-09, "m"], "z": [4e-08, "m"]}
    assert layers["somata"]["linkedSegmentationLayer"] == {"segments": "seg"}


def test_selected_segments_and_colours(l4, graph):
    cells = graph.nodes[(graph.nodes["cell_type"] == "4P") & (graph.nodes["layer"] == "L4")]
    parser = StateParser(l4.state)
    sel = parser.selection_dataframe()
    assert set(sel["layer"]) == {"seg"}
    assert sorted(int(i) for i in sel["id"]) == sorted(cells["root_id"].tolist()) == sorted(l4.segments)
    colours = next(layer for layer in l4.state["layers"] if layer["name"] == "seg")["segmentColors"]
    assert {int(k) for k in colours} == set(cells["root_id"])
    assert set(colours.values()) == {TYPE_COLORS["4P"]}


def test_soma_points_are_voxels_linked_to_their_segment(l4, graph):
    annos = StateParser(l4.state).annotation_dataframe()
    assert set(annos["anno_type"]) == {"point"} and set(annos["layer"]) == {"somata"}
    by_root = graph.nodes.set_index("root_id")
    roots = [int(s[0]) for s in annos["linked_segmentation"]]
    assert sorted(roots) == sorted(l4.segments)
    want = by_root.loc[roots, ["x_nm", "y_nm", "z_nm"]].to_numpy() / np.array([4.0, 4.0, 40.0])
    np.testing.assert_allclose(np.stack(annos["point"].to_numpy()), want, rtol=1e-6)
    assert all(d.startswith("4P|L4 ") for d in annos["description"])
    # the view is centred on the selected somata
    np.testing.assert_allclose(l4.state["position"], want.mean(axis=0), rtol=1e-5)


def test_url_encodes_the_json(l4):
    import neuroglancer

    assert l4.url.startswith(DEFAULT_NEUROGLANCER_URL + "#!")
    decoded = json.loads(urllib.parse.unquote(l4.url.split("#!", 1)[1]))
    assert decoded == l4.state
    # 64-bit ids travel as strings (a JSON number would lose digits in the browser)
    seg = next(layer for layer in l4.state["layers"] if layer["name"] == "seg")
    somata = next(layer for layer in l4.state["layers"] if layer["name"] == "somata")
    assert all(isinstance(s, str) for s in seg["segments"])
    assert all(isinstance(a["segments"][0][0], str) for a in somata["annotations"])
    parsed = neuroglancer.parse_url(l4.url)        # neuroglancer's own parser
    assert sorted(int(s) for s in parsed.layers["seg"].segments) == sorted(l4.segments)


def test_types_and_ids_selections(graph):
    st = neuroglancer_state(graph, types=["BC", "MC"])
    n = graph.nodes
    assert sorted(st.segments) == sorted(n.loc[n["cell_type"].isin(["BC", "MC"]), "root_id"])
    colours = next(layer for layer in st.state["layers"] if layer["name"] == "seg")["segmentColors"]
    types = n.set_index("root_id")["cell_type"]
    assert all(c == TYPE_COLORS[types[int(r)]] for r, c in colours.items())
    assert set(colours.values()) == {TYPE_COLORS["BC"], TYPE_COLORS["MC"]}
    ids = n["root_id"].iloc[[3, 10, 400]].tolist()
    st = neuroglancer_state(graph, ids=ids)
    assert sorted(st.segments) == sorted(ids)
    assert len(StateParser(st.state).annotation_dataframe()) == 3


def test_materialization_picks_the_segmentation(graph):
    real = replace(graph, meta={**graph.meta, "datastack": "minnie65_public", "version": 943})
    assert neuroglancer_state(real, ids=graph.nodes["root_id"][:2]).segmentation == STATIC_SEGMENTATIONS[943]
    st = neuroglancer_state(real, ids=graph.nodes["root_id"][:2], version=1181)   # no static release
    assert st.segmentation == GRAPHENE_SEGMENTATION and st.version == 1181
    seg = next(layer for layer in st.state["layers"] if layer["name"] == "seg")
    assert _source_url(seg) == GRAPHENE_SEGMENTATION


@pytest.mark.parametrize("kwargs, message", [
    ({"population": "4P|L9"}, "has no cells"),
    ({"population": "4P"}, "expected '<cell_type>|<layer>'"),
    ({"types": ["XX"]}, "not in the graph"),
    ({"ids": [1, 2]}, "not in the graph"),
    ({}, "exactly one"),
    ({"population": "4P|L4", "types": ["4P"]}, "exactly one"),
])
def test_bad_selections(graph, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|")):
        select_cells(graph, **kwargs)


def test_type_colours_are_distinct_and_stable():
    assert len(set(TYPE_COLORS.values())) == len(TYPE_COLORS)
    assert type_color("6P-U") == type_color("6P-U") and type_color("6P-U").startswith("#")


def test_cli_prints_the_link_and_writes_json(surrogate_graph, tmp_path, capsys):
    from pipelines.export import main

    out = tmp_path / "state.json"
    assert main(["neuroglancer", "--graph", str(surrogate_graph.folder), "--population", "4P|L4",
                 "--json", str(out)]) == 0
    url = capsys.readouterr().out.strip()
    state = json.loads(out.read_text())
    assert json.loads(urllib.parse.unquote(url.split("#!", 1)[1])) == state
    assert main(["neuroglancer", "--graph", str(surrogate_graph.folder), "--types", "XX"]) == 2
    assert "not in the graph" in capsys.readouterr().err
