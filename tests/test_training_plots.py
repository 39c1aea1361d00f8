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


@pytest.mark.parametrize("k", range(1, 8))
def test_training_curves_grid_holds_exactly_the_panels_drawn(k):
    fig = PL.training_curves({"epoch": [1, 2, 3], **{f"m{i}": [1.0, 2.0, 3.0] for i in range(k)}})
    assert len(fig.axes) == k and all(ax.get_lines() and ax.axison for ax in fig.axes)
    rows = {}
    for ax in fig.axes:
        rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax.get_subplotspec())
    sizes = [len(r) for r in rows.values()]
    assert max(sizes) <= 3 and max(sizes) - min(sizes) <= 1          # rows as even as they can be
    widths = {s.colspan.stop - s.colspan.start for r in rows.values() for s in r}
    assert len(widths) == 1                                           # every panel the same size
    with pytest.raises(ValueError, match="no numeric metric"):
        PL.training_curves({"epoch": [1, 2]})


def test_a_run_history_draws_four_panels_two_by_two_learning_rate_last():
    """What pipelines.train logs per epoch: loss, accuracy, F1 (validation only) and the rate."""
    history = [{"epoch": e, "step": 10 * e, "lr": 1e-3 / e, "train_loss": 2.0 / e, "train_acc": 0.2 * e,
                "val_loss": 2.1 / e, "val_acc": 0.2 * e, "val_f1": 0.1 * e} for e in (1, 2, 3)]
    fig = PL.training_curves(history, x="epoch")
    assert [ax.get_title() for ax in fig.axes] == ["loss", "acc", "f1", "lr"]
    assert [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes] \
        == [(0, 0), (0, 2), (1, 0), (1, 2)]
    # validation has one colour in every panel, the panel without training curves included
    val = {l.get_color() for ax in fig.axes for l in ax.get_lines() if l.get_label() == "val"}
    train = {l.get_color() for ax in fig.axes for l in ax.get_lines() if l.get_label() == "train"}
    assert len(val) == 1 and len(train) == 1 and val != train


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
