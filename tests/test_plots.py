"""connectomics.plots and connectomics.stats: every figure returns a Figure whose drawn data is the
graph's own numbers, as the stats tables give them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from connectomics import ConnectomeGraph
from connectomics import plots as P
from connectomics import stats as S
from connectomics.layers import LayerBounds
from tests.helpers import image_data, images, lines_with_gid


@pytest.fixture(scope="module")
def graph(surrogate_graph) -> ConnectomeGraph:
    return surrogate_graph.graph


def test_module_imports_neither_pyplot_nor_graphnet():
    code = ("import sys, connectomics.plots; "
            "bad = [m for m in ('graphnet', 'matplotlib.pyplot', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cells_per_type_layer(graph):
    fig = P.cells_per_type_layer(graph)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    counts = S.cell_counts(graph)
    assert counts.to_numpy().sum() == graph.n_nodes == 1351
    present = set(graph.nodes["layer"])
    assert list(counts.index[:2]) == ["23P", "4P"]
    assert list(counts.columns) == [l for l in ("L1", "L2/3", "L4", "L5", "L6", "WM") if l in present]
    # stacked bars: heights per type add up to the type's count; one bar series per layer
    heights = np.zeros(len(counts))
    for p in ax.patches:
        heights[int(round(p.get_x() + p.get_width() / 2))] += p.get_height()
    np.testing.assert_array_equal(heights, counts.sum(axis=1).to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(counts.index)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(counts.columns)
    assert "1351 cells" in ax.get_title() and ax.get_ylabel() == "cells"


def test_soma_depths_draws_layer_boundaries(graph):
    fig = P.soma_depths(graph)
    ax0, ax1 = fig.axes[:2]
    bounds = LayerBounds().bounds_um
    for ax in (ax0, ax1):
        ys = sorted(l.get_ydata()[0] for l in lines_with_gid(ax, "layer-boundary"))
        assert ys == list(bounds)
    # every cell drawn once per panel, at its depth; pia on top
    for ax in (ax0, ax1):
        depth = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
        np.testing.assert_allclose(np.sort(depth), np.sort(graph.nodes["depth_um"].to_numpy()))
    assert ax0.yaxis_inverted()
    names = {t.get_gid() for t in ax1.texts}
    assert {"layer-name:L1", "layer-name:L2/3", "layer-name:L4", "layer-name:L5", "layer-name:L6"} <= names
    assert "depth" in ax0.get_ylabel()
    # explicit bounds are drawn as given
    custom = LayerBounds((100.0, 300.0, 400.0, 550.0, 750.0))
    fig = P.soma_depths(graph, custom)
    assert sorted(l.get_ydata()[0] for l in lines_with_gid(fig.axes[0], "layer-boundary")) == list(custom.bounds_um)


@pytest.mark.parametrize("value", ["connection_probability", "synapses_per_connection", "summed_size"])
def test_connectivity_matrix_is_the_type_graph(graph, value):
    fig = P.connectivity_matrix(graph, value)
    (im,) = images(fig)
    table = S.connectivity_table(graph, value)
    data = image_data(im)
    np.testing.assert_array_equal(np.isnan(data), table.isna().to_numpy())
    np.testing.assert_allclose(np.nan_to_num(data), np.nan_to_num(table.to_numpy()))
    tg = graph.type_graph
    names = list(table.index)
    assert sorted(names) == sorted(tg.nodes)
    for a, b, d in tg.edges(data=True):
        assert data[names.index(a), names.index(b)] == pytest.approx(d[value])
    unconnected = [(a, b) for a in names for b in names if not tg.has_edge(a, b)]
    assert unconnected
    for a, b in unconnected:
        v = data[names.index(a), names.index(b)]
        assert (np.isnan(v) if value == "synapses_per_connection" else v == 0)
    ax = im.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    # E block first, then I; one line between them on each axis
    ei = [tg.nodes[n]["ei"] for n in names]
    first_i = ei.index("I")
    assert ei == ["E"] * first_i + ["I"] * (len(ei) - first_i)
    h = [l for l in lines_with_gid(ax, "ei-boundary") if l.get_ydata()[0] == l.get_ydata()[1]]
    v = [l for l in lines_with_gid(ax, "ei-boundary") if l.get_xdata()[0] == l.get_xdata()[1]]
    assert [l.get_ydata()[0] for l in h] == [first_i - 0.5]
    assert [l.get_xdata()[0] for l in v] == [first_i - 0.5]
    # a colorbar labelled with the value; log scale for summed size
    cbar = im.colorbar
    assert cbar is not None and P.VALUE_LABELS[value] in cbar.ax.get_ylabel()
    assert isinstance(im.norm, LogNorm) == (value == "summed_size")
    assert P.VALUE_LABELS[value].lower() in ax.get_title().lower()


def test_connectivity_by_cell_type_pools_layers(graph):
    table = S.connectivity_table(graph, "connection_probability", by="cell_type")
    nodes, e = graph.nodes, graph.edges
    t = nodes["cell_type"].to_numpy()
    pre, post = t[e["pre"].to_numpy()], t[e["post"].to_numpy()]
    n = nodes["cell_type"].value_counts()
    for a, b in [("BC", "23P"), ("23P", "23P"), ("MC", "BC"), ("4P", "5P-ET")]:
        pairs = int(((pre == a) & (post == b)).sum())
        possible = n[a] * n[b] - (n[a] if a == b else 0)
        assert table.loc[a, b] == pytest.approx(pairs / possible)
    fig = P.connectivity_matrix(graph, "n_synapses", by="cell_type")
    (im,) = images(fig)
    assert np.nansum(image_data(im)) == e["n_synapses"].sum()
    # many rows (15 types): no numbers; few rows: values are written into the cells
    assert len(table) > 12 and len(im.axes.texts) == 0
    (im,) = images(P.connectivity_matrix(graph, "n_synapses", by="cell_type", annotate=True))
    assert len(im.axes.texts) == np.isfinite(image_data(im)).sum()


def test_connectivity_order_and_errors(graph):
    order = ["BC|L2/3", "23P|L2/3", "4P|L4"]
    table = S.connectivity_table(graph, "connection_probability", order=order)
    assert list(table.index) == order == list(table.columns)
    assert table.loc["BC|L2/3", "23P|L2/3"] == graph.type_graph.edges["BC|L2/3", "23P|L2/3"]["connection_probability"]
    fig = P.connectivity_matrix(graph, "connection_probability", order="layer")
    names = [t.get_text() for t in images(fig)[0].axes.get_yticklabels()]
    layers = [n.split("|")[1] for n in names]
    assert layers == sorted(layers, key=["L1", "L2/3", "L4", "L5", "L6", "WM"].index)   # pia first
    assert names[0].endswith("|L1") and "23P|L2/3" in names
    with pytest.raises(ValueError, match="unknown population"):
        S.connectivity_table(graph, order=["nope|L9"])
    with pytest.raises(ValueError, match="value="):
        P.connectivity_matrix(graph, "weight")
    with pytest.raises(ValueError, match="order="):
        P.connectivity_matrix(graph, order="random")


def test_layer_flow(graph):
    table = S.layer_table(graph, pre_ei="E")
    e, nodes = graph.edges, graph.nodes
    is_e = (nodes["ei"] == "E").to_numpy()[e["pre"].to_numpy()]
    assert table["n_synapses"].sum() == e.loc[is_e, "n_synapses"].sum()
    assert table["connected_pairs"].sum() == is_e.sum()
    everyone = S.layer_table(graph, pre_ei=None)
    assert everyone["n_synapses"].sum() == e["n_synapses"].sum()
    assert everyone["possible_pairs"].sum() == graph.n_nodes * (graph.n_nodes - 1)
    row = table[(table.pre_layer == "L4") & (table.post_layer == "L2/3")].iloc[0]
    assert row.connection_probability == pytest.approx(row.connected_pairs / row.possible_pairs)

    fig = P.layer_flow(graph)
    (im,) = [i for i in images(fig) if i.get_gid() == "layer-matrix"]
    rows = [t.get_text() for t in im.axes.get_yticklabels()]
    cols = [t.get_text() for t in im.axes.get_xticklabels()]
    present = [l for l in ("L1", "L2/3", "L4", "L5", "L6", "WM") if l in set(graph.nodes["layer"])]
    e_layers = set(graph.nodes.loc[graph.nodes["ei"] == "E", "layer"])
    assert cols == present and rows == [l for l in present if l in e_layers]  # rows: layers with E cells
    pivot = table.pivot(index="pre_layer", columns="post_layer", values="connection_probability")
    np.testing.assert_allclose(image_data(im), pivot.loc[rows, cols].to_numpy())
    gids = {p.get_gid() for ax in fig.axes for p in ax.patches}
    for a, b in [("L4", "L2/3"), ("L2/3", "L5"), ("L5", "L6")]:
        assert f"flow:{a}->{b}:canonical" in gids
    assert any(g and g.startswith("flow:") and not g.endswith("canonical") for g in gids)


def test_degree_distributions(graph):
    fig = P.degree_distributions(graph, by="cell_type")
    ax_in, ax_out = fig.axes[:2]
    deg = S.degrees(graph)
    assert deg["in_degree"].sum() == deg["out_degree"].sum() == len(graph.edges)
    types = [t.get_text() for t in ax_out.get_xticklabels()]   # in above out: names written once, below
    assert types[:2] == ["23P", "4P"] and set(types) == set(graph.nodes["cell_type"])
    for ax, col in ((ax_in, "in_degree"), (ax_out, "out_degree")):
        medians = [l for l in ax.get_lines() if l.get_color() == "black" and len(l.get_xdata()) == 2
                   and l.get_ydata()[0] == l.get_ydata()[1] and l.get_linestyle() == "-"]
        got = sorted(m.get_ydata()[0] for m in medians)
        want = sorted(deg.groupby("cell_type")[col].median())
        assert all(any(g == pytest.approx(w) for g in got) for w in want)
    assert "In-degree" in ax_in.get_title() and "Out-degree" in ax_out.get_title()
    fig = P.degree_distributions(graph, by=None)
    assert sum(len(ax.patches) for ax in fig.axes) == 80  # two 40-bin histograms
    assert len(P.degree_distributions(graph, by="population").axes[1].get_xticklabels()) == graph.type_graph.number_of_nodes()
    with pytest.raises(ValueError, match="by="):
        P.degree_distributions(graph, by="colour")


def _shuffled(graph: ConnectomeGraph, seed: int = 1) -> ConnectomeGraph:
    """Posts permuted among edges (duplicates and autapses dropped): a crude null."""
    rng = np.random.default_rng(seed)
    e = graph.edges.copy()
    e["post"] = rng.permutation(e["post"].to_numpy())
    e = e[e.pre != e.post].drop_duplicates(["pre", "post"]).reset_index(drop=True)
    e["post_root_id"] = graph.nodes["root_id"].to_numpy()[e["post"].to_numpy()]
    return ConnectomeGraph(nodes=graph.nodes, edges=e, meta={"null_model": "test"})


def test_compare_graphs(graph):
    graphs = {"connectome": graph, "shuffled": _shuffled(graph)}
    fig = P.compare_graphs(graphs)
    ims = images(fig)
    assert len(ims) == 2
    assert ims[0].norm.vmin == ims[1].norm.vmin and ims[0].norm.vmax == ims[1].norm.vmax
    for im, (name, g) in zip(ims, graphs.items()):
        assert im.axes.get_title() == name
        np.testing.assert_allclose(image_data(im), S.connectivity_table(g).to_numpy())
    bar_ax = next(ax for ax in fig.axes if ax.get_title() == "Connection probability by class")
    heights = [p.get_height() for p in bar_ax.patches]
    want = [v for g in graphs.values() for v in S.ei_connection_probability(g).values()]
    np.testing.assert_allclose(heights, want)
    e = (graph.nodes["ei"] == "E").to_numpy()
    ee_pairs = int((e[graph.edges["pre"]] & e[graph.edges["post"]]).sum())
    assert S.ei_connection_probability(graph)["E->E"] == pytest.approx(ee_pairs / (e.sum() * (e.sum() - 1)))
    assert S.ei_connection_probability(graph)["E->E"] == pytest.approx(29_177 / (1188 * 1187), rel=0.05)  # real
    r = S.reciprocity(graph)
    assert 0 < r < 1
    with pytest.raises(ValueError):
        P.compare_graphs({})
    # by cell type (layers pooled): the same tables at that level, labels big enough to read
    fig = P.compare_graphs(graphs, by="cell_type")
    for im, g in zip(images(fig), graphs.values()):
        np.testing.assert_allclose(image_data(im), S.connectivity_table(g, by="cell_type").to_numpy())
        assert [t.get_text() for t in im.axes.get_xticklabels()] == list(S.connectivity_table(g, by="cell_type").columns)
        assert min(t.get_fontsize() for t in im.axes.get_xticklabels()) >= 7


def test_save_graph_plots_writes_pngs(graph, tmp_path):
    paths = P.save_graph_plots(graph, tmp_path / "plots", dpi=50)
    assert len(paths) == 8 and len({p.name for p in paths}) == 8
    assert {"n_synapses.png", "summed_size.png"} <= {p.name for p in paths}
    for p in paths:
        assert p.parent == tmp_path / "plots" and p.suffix == ".png"
        head = p.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000, p
    assert not list((tmp_path / "plots").glob(".*tmp"))


def test_save_graph_plots_draws_no_size_matrix_for_a_count_only_source(column_graph, tmp_path):
    """The real column has synapse counts only: its plots show the counts, not an empty size
    matrix."""
    g = column_graph.graph
    assert not S.has_synapse_sizes(g)
    names = {p.name for p in P.save_graph_plots(g, tmp_path / "plots", dpi=30)}
    assert "n_synapses.png" in names and "summed_size.png" not in names and len(names) == 7


def test_saved_matrix_keeps_its_title_inside_the_picture(column_graph, tmp_path):
    """An equal-aspect matrix of 40 populations: the saved PNG holds everything drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig = P.connectivity_matrix(column_graph.graph, "n_synapses")
    path = P.save_figure(fig, tmp_path / "m.png", dpi=100)
    FigureCanvasAgg(fig)
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())      # inches
    width, height = Image.open(path).size
    assert width >= drawn.width * 100 and height >= drawn.height * 100


def test_build_graph_cli_plots(tmp_path, capsys, monkeypatch):
    """``build_graph --plots`` hands the built graph to save_graph_plots (<graph>/plots)."""
    from pipelines import build_graph as cli

    calls = []

    def fake(graph, folder):
        calls.append((graph, folder))
        return [folder / "x.png"]

    monkeypatch.setattr(P, "save_graph_plots", fake)
    assert cli.main(["--cache", str(tmp_path), "--quiet", "--plots"]) == 0
    (graph, folder), = calls
    from connectomics.sources.column import ColumnSource  # the default source: the real column

    assert graph.n_nodes == 1351 and folder == tmp_path / ColumnSource().namespace / "v1" / "graph" / "plots"
    assert f"plot: {folder / 'x.png'}" in capsys.readouterr().out


# -- null models (graphnet) ---------------------------------------------------------------------
def test_compare_with_graphnet_null_models(graph):
    from graphnet.null_models import degree_shuffle, label_shuffle, random_graph

    graphs = {"connectome": graph, "random": random_graph(graph, 0),
              "degree shuffle": degree_shuffle(graph, 0, swaps_per_edge=1.0),
              "label shuffle": label_shuffle(graph, 0)}
    fig = P.compare_graphs(graphs)
    ims = images(fig)
    assert [im.axes.get_title() for im in ims] == list(graphs)
    # the degree shuffle keeps every population block's connected pairs: same matrix
    np.testing.assert_allclose(image_data(ims[2]), image_data(ims[0]))
    assert not np.allclose(image_data(ims[1]), image_data(ims[0]))
    corr = next(ax for ax in fig.axes if ax.get_title().startswith("Reciprocity"))
    r = [p.get_height() for p in corr.patches][len(graphs):]  # second bar group: correlations
    assert r[0] == pytest.approx(1.0) and r[2] == pytest.approx(1.0) and r[1] < 0.5


def _subgraph(graph: ConnectomeGraph, keep: np.ndarray) -> ConnectomeGraph:
    new = np.full(graph.n_nodes, -1)
    new[keep] = np.arange(len(keep))
    e = graph.edges
    e = e[(new[e["pre"]] >= 0) & (new[e["post"]] >= 0)].copy()
    e["pre"], e["post"] = new[e["pre"]], new[e["post"]]
    return ConnectomeGraph(nodes=graph.nodes.iloc[keep], edges=e.reset_index(drop=True), meta={})


def test_small_and_empty_graphs_still_plot(graph, tmp_path):
    """No WM, no L1, no meta, a few cells, no edges at all: every plot still draws."""
    nodes = graph.nodes
    keep = np.flatnonzero(~nodes["layer"].isin(["WM", "L1"]).to_numpy())[::12]
    small = _subgraph(graph, keep)
    assert 50 < small.n_nodes < 150 and len(small.edges)
    empty = ConnectomeGraph(nodes=small.nodes, edges=small.edges.iloc[:0], meta={})
    figs = [P.soma_depths(small), P.layer_flow(small, pre_ei=None), P.degree_distributions(small, by=None),
            P.cells_per_type_layer(empty), P.soma_depths(empty), P.layer_flow(empty),
            P.degree_distributions(empty), P.compare_graphs({"a": empty, "b": small})]
    figs += [P.connectivity_matrix(empty, v) for v in ("synapses_per_connection", "summed_size")]
    for i, f in enumerate(figs):  # drawing runs the layout: errors there show up only now
        assert isinstance(f, Figure)
        P.save_figure(f, tmp_path / f"{i}.png", dpi=20)
    assert np.isnan(S.reciprocity(empty))
    assert S.connectivity_table(empty).to_numpy().sum() == 0
