"""Per-image predictions of a finished run: the class its best and its final checkpoint predict
for every image of each evaluation usage, beside the true labels, in one small file.

    <run>/predictions.npz   (numpy ``savez_compressed``; about 4 kB for PublicTest's 3,589 images)
        classes          (7,) str     class names; class id = index (pipelines.fer2013.CLASSES)
        usages           (U,) str     the evaluation usages stored, e.g. ["PublicTest"]
        <usage>_label    (N,) int8    true class of each image of that usage
        <usage>_best     (N,) int8    class predicted by best.pt (the best epoch on the selection usage)
        <usage>_final    (N,) int8    class predicted by final.pt (the last epoch: no selection)
        best_epoch       ()   int32   epoch (1-based) of best.pt
        final_epoch      ()   int32   epoch of final.pt
        tta_flip         ()   bool    whether the predictions average each image with its mirror

Images are in the order of the source's rows of that usage (``FER2013.split``), the first
``limit_val`` of them when the run set ``limit_val`` (the subset its epochs were selected on), so
runs on the same data file are paired image by image. The evaluation usages are the usages of the
data other than the run's ``train_usage`` (PublicTest, and PrivateTest where the file has it).

Beside it, ``eval_<usage>_final.json`` is the final checkpoint's full report (the format of
``eval_<usage>.json``, which is the best checkpoint's), and the run summary gets
``final_<usage>_acc`` / ``final_<usage>_f1``. :func:`store_predictions` writes them at the end of
training; ``python -m pipelines.evaluate --run RUN --predictions`` writes them for a finished run
folder (it needs ``best.pt`` and ``final.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .evaluate import confusion_matrix, predict_arrays, report, write_report
from .fer2013 import CLASSES, USAGES
from .run_dir import RunDir

if TYPE_CHECKING:
    from .config import Config
    from .fer2013 import FER2013
    from .runtime import Runtime

#: The two checkpoints whose predictions are stored.
CHECKPOINTS: tuple[str, ...] = ("best", "final")


def evaluation_usages(ds: "FER2013", cfg: "Config") -> list[str]:
    """The usages of ``ds`` other than the run's training usage, in :data:`USAGES` order."""
    return [u for u in USAGES if u != cfg.train_usage and u in ds.usages]


def store_predictions(run: str | Path, model: nn.Module, best_state: dict, ds: "FER2013",
                      cfg: "Config", rt: "Runtime", *, best_epoch: int, final_epoch: int,
                      plot: bool = False) -> dict[str, float]:
    """Write ``predictions.npz`` and ``eval_<usage>_final.json`` into the run folder ``run``.

    ``model`` holds the final weights (on ``rt.device``) and holds them again on return;
    ``best_state`` is best.pt's state dict. Returns ``{"final_<usage>_acc": accuracy (0-1),
    "final_<usage>_f1": macro F1}`` for the run summary."""
    final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    arrays: dict[str, np.ndarray] = {}
    figures: dict[str, float] = {}
    usages = evaluation_usages(ds, cfg)
    try:
        for ck, state in (("final", None), ("best", best_state)):
            if state is not None:
                model.load_state_dict(state)
            for usage in usages:
                xi, yi = ds.split(usage)
                if cfg.limit_val:
                    xi, yi = xi[:cfg.limit_val], yi[:cfg.limit_val]
                pred = predict_arrays(model, torch.as_tensor(xi).to(rt.device), cfg.eval_batch_size,
                                      rt.amp_dtype, rt.channels_last, tta_flip=cfg.tta_flip)
                arrays[f"{usage}_label"] = yi.astype(np.int8)
                arrays[f"{usage}_{ck}"] = pred.astype(np.int8)
                if ck == "final":
                    rep = report(confusion_matrix(yi, pred))
                    rep.update(usage=usage, checkpoint="final", epoch=final_epoch, amp=rt.amp,
                               data=cfg.data, tta_flip=cfg.tta_flip)
                    write_report(rep, run, f"{usage}_final", plot=plot)
                    figures[f"final_{usage}_acc"] = rep["accuracy"]
                    figures[f"final_{usage}_f1"] = rep["macro_f1"]
    finally:
        model.load_state_dict(final_state)
    save_predictions(RunDir(run).predictions, arrays, usages, best_epoch=best_epoch,
                     final_epoch=final_epoch, tta_flip=cfg.tta_flip)
    return figures


def save_predictions(path: str | Path, arrays: dict[str, np.ndarray], usages: list[str], *,
                     best_epoch: int, final_epoch: int, tta_flip: bool) -> Path:
    """Write the file (format: module doc) atomically; ``arrays`` holds ``<usage>_label``,
    ``<usage>_best`` and ``<usage>_final`` for every usage of ``usages``."""
    from connectomics.atomic_io import atomic_write

    path = Path(path)
    want = {f"{u}_{k}" for u in usages for k in ("label", *CHECKPOINTS)}
    if set(arrays) != want:
        raise ValueError(f"{path}: predictions need exactly {sorted(want)}, got {sorted(arrays)}")
    for u in usages:
        n = {len(arrays[f"{u}_{k}"]) for k in ("label", *CHECKPOINTS)}
        if len(n) != 1:
            raise ValueError(f"{path}: {u}: labels and predictions differ in length ({sorted(n)})")
    payload = {k: np.asarray(v, np.int8) for k, v in arrays.items()}
    payload.update(classes=np.array(CLASSES), usages=np.array(usages, dtype=str),
                   best_epoch=np.int32(best_epoch), final_epoch=np.int32(final_epoch),
                   tta_flip=np.bool_(tta_flip))
    atomic_write(path, lambda f: np.savez_compressed(f, **payload))
    return path


def load_predictions(folder: str | Path) -> dict | None:
    """The predictions of a run or result folder, ``None`` when it has none: ``{"usages": [...],
    "classes": [...], "best_epoch", "final_epoch", "tta_flip", <usage>: {"label", "best",
    "final"} (N,) int8 arrays}``. A file that is not of the format raises ``ValueError`` naming it."""
    path = RunDir(folder).predictions
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            usages = [str(u) for u in z["usages"]]
            out: dict = {"usages": usages, "classes": [str(c) for c in z["classes"]],
                         "best_epoch": int(z["best_epoch"]), "final_epoch": int(z["final_epoch"]),
                         "tta_flip": bool(z["tta_flip"])}
            for u in usages:
                out[u] = {k: np.asarray(z[f"{u}_{k}"]) for k in ("label", *CHECKPOINTS)}
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a predictions file ({exc})") from None
    if tuple(out["classes"]) != CLASSES:
        raise ValueError(f"{path}: classes {out['classes']} are not {list(CLASSES)}")
    for u in usages:
        n = {len(a) for a in out[u].values()}
        if len(n) != 1:
            raise ValueError(f"{path}: {u}: labels and predictions differ in length ({sorted(n)})")
    return out


def correct(pred: dict, usage: str, checkpoint: str) -> np.ndarray | None:
    """(N,) bool: which images of ``usage`` the ``checkpoint`` (best | final) classified
    correctly; ``None`` when ``pred`` (:func:`load_predictions`) is ``None`` or lacks the usage."""
    if pred is None or usage not in pred:
        return None
    return pred[usage][checkpoint] == pred[usage]["label"]


def predictions_for_run(run: str | Path, data: str | None = None, cache_root: str | None = None,
                        device: str = "auto", out: str | Path | None = None) -> dict[str, float]:
    """:func:`store_predictions` for a finished run folder (``best.pt`` and ``final.pt``), on
    ``data`` (default: the run's), into ``out`` (default: the run folder)."""
    from dataclasses import replace

    from .checkpoint import load_checkpoint
    from .config import Config
    from .evaluate import load_run_model
    from .fer2013 import load_fer2013
    from .runtime import runtime_of

    rd = RunDir(run)
    if not rd.config.is_file():
        raise FileNotFoundError(f"--run {run}: not a training run ({rd.config} is missing)")
    for ck in CHECKPOINTS:
        if not rd.checkpoint(ck).is_file():
            raise FileNotFoundError(f"{rd.checkpoint(ck)}: missing (predictions need a finished run "
                                    f"with {' and '.join(c + '.pt' for c in CHECKPOINTS)})")
    rt = runtime_of(Config.load(rd.config), device=device, threads=torch.get_num_threads())
    model, cfg, final = load_run_model(run, "final", device=rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    best = load_checkpoint(rd.best)
    cfg = replace(cfg, data=data or cfg.data, cache_root=cache_root or cfg.cache_root)
    ds = load_fer2013(cfg.data, cfg.cache_root)
    return store_predictions(out or run, model, best["model"], ds, cfg, rt, best_epoch=int(best["epoch"]),
                             final_epoch=int(final["state"]["epoch"]))
