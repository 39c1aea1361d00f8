"""pipelines.plots: training curves and confusion matrices draw the numbers they are given."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines import plots as PL
from tests.helpers import image_data, images


def test_training_curves_from_frame_dict_and_records():
    df = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [2.0, 1.5, 1.2, 1.0],
                       "val_loss": [2.1, np.nan, 1.4, 1.3], "train_acc": [0.2, 0.3, 0.4, 0.5],
                       "val_acc": [0.2, 0.25, 0.35, 0.45], "lr": [1e-3] * 4})
    for metrics in (df, df.to_dict("list"), df.to_dict("records")):
        fig = PL.training_curves(metrics)
        titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
        assert set(titled) == {"loss", "acc", "lr"}
        lines = {l.get_label(): l for l in titled["loss"].get_lines()}
        assert set(lines) == {"train", "val"}
        np.testing.assert_array_equal(lines["val"].get_xdata(), [1, 3, 4])  # NaN skipped
        np.testing.assert_array_equal(lines["train"].get_ydata(), df["train_loss"])
        assert titled["loss"].get_xlabel() == "epoch"
    fig = PL.training_curves({"step": [0, 10], "loss": [1.0, 0.5]})
    assert fig.axes[0].get_xlabel() == "step" and fig.axes[0].get_title() == "loss"


def test_confusion_matrix():
    cm = np.array([[8, 2, 0], [1, 7, 2], [0, 0, 10]])
    fig = PL.confusion_matrix(cm, ["angry", "happy", "sad"])
    (im,) = images(fig)
    data = image_data(im)
    np.testing.assert_allclose(data.sum(axis=1), 1.0)
    np.testing.assert_allclose(data[0], [0.8, 0.2, 0.0])
    ax = im.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["angry", "happy", "sad"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert "83.3%" in ax.get_title()
    fig = PL.confusion_matrix(cm, ["a", "b", "c"], normalize=False)
    np.testing.assert_array_equal(image_data(images(fig)[0]), cm)
    with pytest.raises(ValueError):
        PL.confusion_matrix(cm, ["a", "b"])


def test_figures_draw_under_agg_without_pyplot(tmp_path):
    """Run in a fresh interpreter forced to Agg: the figures save as PNG, the backend is still Agg
    and pyplot (global figure state) was never imported."""
    code = (
        "import sys, matplotlib; matplotlib.use('Agg'); import numpy as np; "
        "from pipelines import plots as PL; "
        f"PL.plot_confusion(np.eye(2, dtype=int), ['a', 'b'], {str(tmp_path / 'cm.png')!r}); "
        f"PL.plot_curves([{{'epoch': 1, 'train_loss': 1.0}}], {str(tmp_path / 'c.png')!r}); "
        "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend(); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("cm.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
