"""Training curves and confusion-matrix PNGs of a run, drawn by :mod:`connectomics.plot`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from connectomics.plot import confusion_matrix, save_figure, training_curves


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss, accuracy, F1 and learning rate per epoch (train and validation) as a PNG."""
    rows = [{k: v for k, v in h.items() if k not in ("epoch_seconds", "train_images_per_s", "step", "is_best")}
            for h in history]
    fig = training_curves(rows, x="epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def plot_confusion(cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str],
                   path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true class) with the counts, as a PNG."""
    fig = confusion_matrix(cm, classes, normalize=True)
    if title:
        fig.axes[0].set_title(title)
    return save_figure(fig, path, dpi=110)
