"""graphnet.plots: the mask images are the compiled column's masks, drawn grouped by population."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphnet import ColumnSpec, LayerSpec, chain, compile_column
from graphnet.plots import mask_images, spread_labels
from graphnet.testing import synthetic_graph
from tests.helpers import image_data, images


def _signed_mask(col, key: str) -> np.ndarray:
    """``(n_post, n_pre)`` mask in unit order: +1 / -1 where the presynaptic unit is E / I."""
    pp = col.projection_plans[key]
    mask = col.projection(pp.src, pp.dst).mask.cpu().numpy().astype(bool)
    sign = np.where(np.asarray(col.layer_plans[pp.src].ei) == "I", -1.0, 1.0)
    return np.where(mask, sign[None, :], 0.0)


def _texts(ax, gid: str) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_gid() == gid]


def test_mask_images_show_the_compiled_masks():
    g = synthetic_graph(seed=0)
    for backend in ("dense", "sparse"):
        col = compile_column(g, ColumnSpec.bionic(backend=backend), in_features=8)
        fig = mask_images(col)
        ims = {im.get_gid(): im for im in images(fig)}
        assert set(ims) == {f"mask:{k}" for k in col.projection_plans}
        for key, pp in col.projection_plans.items():
            mod = col.projection(pp.src, pp.dst)
            data = image_data(ims[f"mask:{key}"])
            rows, cols = col.layer_plans[pp.dst].display_order().order, col.layer_plans[pp.src].display_order().order
            np.testing.assert_array_equal(data, _signed_mask(col, key)[np.ix_(rows, cols)])
            title = ims[f"mask:{key}"].axes.get_title()
            assert f"density {mod.density:.4f}" in title and title.endswith(backend)
            assert f"{mod.n_edges} edges" in title
        # one row of panels per postsynaptic layer, the within-layer projection last
        row_of = {im.get_gid(): im.axes.get_subplotspec().rowspan.start for im in images(fig)}
        col_of = {im.get_gid(): im.axes.get_subplotspec().colspan.start for im in images(fig)}
        for key, pp in col.projection_plans.items():
            assert row_of[f"mask:{key}"] == "ABCD".index(pp.dst)
            assert col_of[f"mask:{key}"] == (1 if pp.src == pp.dst else 0)
        # the grid's free panel (nothing projects from another layer into A) explains the figure
        (key_ax,) = [ax for ax in fig.axes if not ax.get_images()]
        assert "How to read" in key_ax.texts[0].get_text()

    # inhibitory presynaptic units are drawn negative (blue), excitatory positive (red)
    spec = chain([LayerSpec("A", ("4P",), ("L4",)), LayerSpec("B", ("23P", "BC"), ("L2/3",))])
    col = compile_column(g, spec, in_features=8)
    im = next(i for i in images(mask_images(col)) if i.get_gid() == "mask:B->B")
    data = image_data(im)
    b = col.layer_plans["B"]
    inhibitory = (np.asarray(b.ei) == "I")[b.display_order().order]
    assert inhibitory.any() and (data[:, inhibitory] <= 0).all() and (data[:, ~inhibitory] >= 0).all()
    assert (data[:, inhibitory] < 0).any() and (data[:, ~inhibitory] > 0).any()
    with pytest.raises(TypeError, match="CorticalColumn"):
        mask_images(object())


@pytest.fixture(scope="module")
def real_column(column_graph):
    return compile_column(column_graph.graph, ColumnSpec.bionic(), in_features=1024)


def test_display_order_groups_each_population_once_on_the_real_column(real_column):
    """In ColumnSpec.bionic() a type's cells of different layers interleave in node order; the
    display order draws each population as one block and keeps the units themselves as they are."""
    for name, plan in real_column.layer_plans.items():
        shown = plan.display_order()
        assert sorted(shown.order) == list(range(plan.size)), name        # a permutation
        unit_population = np.repeat(plan.populations, plan.population_sizes)
        blocks = [(k, len(list(run))) for k, run in itertools.groupby(unit_population[shown.order])]
        assert blocks == list(zip(shown.populations, shown.sizes)), name   # one block each, in order
        # within a population the units keep their relative (node) order
        ids = np.asarray(plan.unit_ids)[shown.order]
        for start, size in zip(np.cumsum([0, *shown.sizes[:-1]]), shown.sizes):
            assert (np.diff(ids[start:start + size]) > 0).all(), name
    # the interleaving is real: layer A is one cell type in node order, not grouped by layer
    a = real_column.layer_plans["A"]
    assert (np.diff(a.unit_ids) > 0).all() and len(a.populations) > 2
    assert a.display_order().populations == ["4P|L2/3", "4P|L4"]


def test_mask_images_permute_the_real_masks_into_population_blocks(real_column):
    fig = mask_images(real_column)
    ims = {im.get_gid(): im for im in images(fig)}
    first_in_row: dict[int, int] = {}
    for im in images(fig):
        spec = im.axes.get_subplotspec()
        first_in_row[spec.rowspan.start] = min(first_in_row.get(spec.rowspan.start, 99), spec.colspan.start)
    assert set(ims) == {f"mask:{k}" for k in real_column.projection_plans}
    for key, pp in real_column.projection_plans.items():
        im = ims[f"mask:{key}"]
        data = image_data(im)
        rows = real_column.layer_plans[pp.dst].display_order()
        cols = real_column.layer_plans[pp.src].display_order()
        mask = _signed_mask(real_column, key)
        # the drawn matrix is the mask with rows and columns permuted, every value kept
        np.testing.assert_array_equal(data, mask[np.ix_(rows.order, cols.order)])
        np.testing.assert_array_equal(data[np.ix_(np.argsort(rows.order), np.argsort(cols.order))], mask)
        assert (data != 0).sum() == real_column.projection(pp.src, pp.dst).n_edges
        # one separator between neighbouring populations, one label per population
        ax = im.axes
        seps = [l for l in ax.get_lines() if l.get_gid() == "population-boundary"]
        vertical = [l for l in seps if l.get_xdata()[0] == l.get_xdata()[1]]
        assert sorted(l.get_xdata()[0] for l in vertical) == list(np.cumsum(cols.sizes)[:-1] - 0.5)
        horizontal = sorted(l.get_ydata()[0] for l in seps if l not in vertical)
        assert horizontal == list(np.cumsum(rows.sizes)[:-1] - 0.5)
        # the postsynaptic populations are named once per row of panels, on its first panel
        spec = ax.get_subplotspec()
        first = spec.colspan.start == first_in_row[spec.rowspan.start]
        assert _texts(ax, "population-label") == cols.populations + (rows.populations if first else []), key


def test_spread_labels_keeps_order_and_gap_and_moves_labels_only_when_needed():
    apart = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(spread_labels(apart, 0.05), apart)
    crowded = np.array([0.50, 0.51, 0.52, 0.90])
    got = spread_labels(crowded, 0.05)
    assert (np.diff(got) >= 0.05 - 1e-12).all()
    assert got[1] == pytest.approx(0.51) and got[3] == pytest.approx(0.90)  # centred; far ones stay
    edge = spread_labels(np.array([0.99, 0.995, 1.0]), 0.1)
    assert edge[-1] <= 1.0 + 1e-12 and (np.diff(edge) >= 0.1 - 1e-12).all()
