"""Training figures: curves of the logged metrics and confusion matrices, and a run's PNGs.

:func:`training_curves` and :func:`confusion_matrix` return a :class:`matplotlib.figure.Figure`
built without pyplot (any backend, Agg included); :func:`plot_curves` and :func:`plot_confusion`
write a run's ``curves.png`` / ``confusion_*.png`` atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from connectomics.plots import save_figure

_SPLITS = ("train", "val", "valid", "validation", "test", "eval")


def _split_metric(name: str) -> tuple[str, str]:
    """``"val_loss"``/``"val/loss"``/``"loss_val"`` -> ("loss", "val"); ``"lr"`` -> ("lr", "")."""
    low = name.lower()
    for s in _SPLITS:
        for sep in ("_", "/", "."):
            if low.startswith(s + sep):
                return name[len(s) + 1:], s
            if low.endswith(sep + s):
                return name[: -len(s) - 1], s
    return name, ""


#: metrics that describe the schedule, not the model: drawn after the others
_SCHEDULE = ("lr", "learning_rate")


def _row_sizes(k: int, max_cols: int = 3) -> list[int]:
    """Panels per row for ``k`` panels in rows of at most ``max_cols``, as even as they can be
    (4 -> 2 + 2, 5 -> 3 + 2, 7 -> 3 + 2 + 2)."""
    nrows = -(-k // max_cols)
    return [k // nrows + (r < k % nrows) for r in range(nrows)]


def _panel_grid(fig: Figure, per_row: Sequence[int]) -> list:
    """Axes of one size, ``per_row[r]`` in row ``r``, a shorter row centred: a grid with exactly
    the panels drawn, no empty ones."""
    width = max(per_row)
    gs = fig.add_gridspec(len(per_row), 2 * width)   # half-panel columns centre a shorter row
    axes = []
    for r, n in enumerate(per_row):
        start = width - n
        axes += [fig.add_subplot(gs[r, start + 2 * j:start + 2 * j + 2]) for j in range(n)]
    return axes


def training_curves(metrics_df: Any, x: str | None = None, metrics: Sequence[str] | None = None) -> Figure:
    """One panel per metric (``train_loss``/``val_loss`` share the "loss" panel, etc.), the
    learning rate last, in rows of at most three as even as they can be (four panels: two
    by two), so the grid holds exactly the panels drawn.

    ``metrics_df``: a pandas DataFrame, a dict of columns or a list of row dicts. ``x``: the
    x column (default ``epoch``, else ``step``, else the row number). NaN entries (metrics logged
    on some rows only) are skipped per line.
    """
    if isinstance(metrics_df, (list, tuple)):
        keys: list[str] = []
        for r in metrics_df:
            keys += [k for k in r if k not in keys]
        series = {k: np.array([r.get(k, np.nan) for r in metrics_df], dtype=float) for k in keys}
    else:
        series = {str(k): np.asarray(metrics_df[k]) for k in list(metrics_df.keys())}
    if not series:
        raise ValueError("training_curves: no columns")
    n = len(next(iter(series.values())))
    if x is None:
        x = next((c for c in ("epoch", "step", "iteration") if c in series), None)
    xs = np.asarray(series[x], dtype=float) if x else np.arange(n, dtype=float)
    skip = {x, "epoch", "step", "iteration", "time", "wall_time"}
    names = list(metrics) if metrics is not None else [
        c for c in series if c not in skip and np.issubdtype(np.asarray(series[c]).dtype, np.number)]
    panels: dict[str, list[tuple[str, str]]] = {}
    for c in names:
        base, split = _split_metric(c)
        panels.setdefault(base, []).append((c, split))
    if not panels:
        raise ValueError(f"training_curves: no numeric metric to draw among {list(series)}")
    panels = dict(sorted(panels.items(), key=lambda kv: kv[0].lower() in _SCHEDULE))
    per_row = _row_sizes(len(panels))
    fig = Figure(figsize=(4.2 * max(per_row), 3.3 * len(per_row) + 0.3), layout="constrained")
    axes = _panel_grid(fig, per_row)
    style = {"train": "-", "val": "-", "valid": "-", "validation": "-", "test": "--", "eval": "-"}
    # one colour per split in every panel (a panel with validation only keeps validation's colour)
    colour = {"train": "C0", "val": "C1", "valid": "C1", "validation": "C1", "test": "C2", "eval": "C3"}
    for ax, (base, lines) in zip(axes, panels.items()):
        for c, split in lines:
            y = np.asarray(series[c], dtype=float)
            ok = np.isfinite(y) & np.isfinite(xs)
            ax.plot(xs[ok], y[ok], style.get(split, "-"), color=colour.get(split, "0.25"),
                    marker="o" if ok.sum() <= 30 else None, ms=3, label=split or c)
        ax.set_title(base)
        ax.set_xlabel(x or "row")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        if "loss" in base.lower() and all(np.nanmin(np.asarray(series[c], float)) > 0 for c, _ in lines):
            y_all = np.concatenate([np.asarray(series[c], float) for c, _ in lines])
            y_all = y_all[np.isfinite(y_all)]
            if len(y_all) and y_all.max() / y_all.min() > 30:
                ax.set_yscale("log")
    fig.suptitle("Training curves")
    return fig


def confusion_matrix(cm: Any, class_names: Sequence[str], normalize: bool = True,
                     title: str | None = None) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted). ``normalize``: each row divided
    by its total (recall on the diagonal), counts written beside; the title gives the accuracy."""
    cm = np.asarray(cm, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"cm {cm.shape} must be square and match {len(class_names)} class names")
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = np.where(rows > 0, cm / np.maximum(rows, 1e-300), 0.0) if normalize else cm
    k = len(class_names)
    side = max(4.5, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    ax.set_xticks(np.arange(k), list(class_names), rotation=45, ha="right")
    ax.set_yticks(np.arange(k), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        thresh = 0.5 * (shown.max() if shown.size else 1)
        for (i, j), v in np.ndenumerate(shown):
            txt = f"{v:.2f}\n({int(cm[i, j])})" if normalize else f"{int(v)}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7 if k > 8 else 8,
                    color="white" if v > thresh else "black")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("fraction of true class" if normalize else "count")
    ax.set_title(f"{title or 'Confusion matrix'} (accuracy {acc:.1%}, n = {int(total)})")
    return fig


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
