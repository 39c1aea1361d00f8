"""Training curves and confusion-matrix figures (PNG, matplotlib Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train and validation) side by side, plus the LR."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], label="validation")
    ax[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax[1].plot(ep, [100 * h["train_acc"] for h in history], label="train (augmented)")
    ax[1].plot(ep, [100 * h["val_acc"] for h in history], label="validation")
    best = [h for h in history if h.get("is_best")]
    if best:
        b = best[-1]
        ax[1].axvline(b["epoch"], color="grey", ls=":", lw=1)
        ax[1].annotate(f"best {100 * b['val_acc']:.2f}% (epoch {b['epoch']})",
                       (b["epoch"], 100 * b["val_acc"]), fontsize=8,
                       xytext=(5, -15), textcoords="offset points")
    ax[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax[2].plot(ep, [h["lr"] for h in history])
    ax[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    for a in ax[:2]:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str],
                   path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows = true class) with the counts in each cell."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * norm[i, j]:.0f}%", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
