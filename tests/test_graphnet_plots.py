"""graphnet.plots: the mask images are the compiled column's masks."""

from __future__ import annotations

import numpy as np
import pytest

from graphnet import ColumnSpec, LayerSpec, chain, compile_column
from graphnet.plots import mask_images
from graphnet.testing import synthetic_graph
from tests.helpers import image_data, images


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
            assert data.shape == (pp.n_dst, pp.n_src)
            np.testing.assert_array_equal(data != 0, mod.mask.cpu().numpy())
            title = ims[f"mask:{key}"].axes.get_title()
            assert f"density {mod.density:.4f}" in title and title.endswith(backend)
            assert f"{mod.n_edges} edges" in title
        # feedforward projections on the top row, within-layer ones below
        top = {im.get_gid() for im in images(fig) if im.axes.get_subplotspec().rowspan.start == 0}
        assert top == {f"mask:{k}" for k, p in col.projection_plans.items() if p.src != p.dst}

    # inhibitory presynaptic units are drawn negative (blue), excitatory positive (red)
    spec = chain([LayerSpec("A", ("4P",), ("L4",)), LayerSpec("B", ("23P", "BC"), ("L2/3",))])
    col = compile_column(g, spec, in_features=8)
    im = next(i for i in images(mask_images(col)) if i.get_gid() == "mask:B->B")
    data = image_data(im)
    inhibitory = np.asarray(col.layer_plans["B"].ei) == "I"
    assert inhibitory.any() and (data[:, inhibitory] <= 0).all() and (data[:, ~inhibitory] >= 0).all()
    assert (data[:, inhibitory] < 0).any() and (data[:, ~inhibitory] > 0).any()
    with pytest.raises(TypeError, match="CorticalColumn"):
        mask_images(object())
