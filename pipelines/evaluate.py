"""Evaluate a trained run on any Usage of any FER-2013 source (CSV or image folder).

    python -m pipelines.evaluate --run runs/paper-s1 --data PATH --usage PrivateTest
        [--checkpoint best|final|last|FILE] [--out DIR] [--device auto|cpu|cuda]

Writes ``eval_<usage>.json`` (accuracy, macro F1, per-class precision/recall/F1/support,
confusion matrix; rows = true class) and ``confusion_<usage>.png`` into the run directory
(or ``--out``) and prints a summary.

    python -m pipelines.evaluate --run runs/paper-s1 --predictions [--data PATH] [--out DIR]

writes instead the per-image predictions of ``best.pt`` and ``final.pt`` on every evaluation
usage of the data (``predictions.npz``) and the final checkpoint's ``eval_<usage>_final.json``
(:mod:`pipelines.predictions`), as a finished training run writes them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .augment import normalize, to_float
from .checkpoint import load_checkpoint
from .config import parse_bool
from .errors import run_cli
from connectomics.atomic_io import atomic_write as _atomic_write

from .fer2013 import CLASSES, USAGES, load_fer2013
from .run_dir import RunDir
from .runtime import runtime_of

NUM_CLASSES = len(CLASSES)


def confusion_matrix(y_true: Tensor | np.ndarray, y_pred: Tensor | np.ndarray,
                     n: int = NUM_CLASSES) -> np.ndarray:
    """(n, n) int64 counts, rows = true class, columns = predicted class."""
    t = torch.as_tensor(y_true).long().flatten()
    p = torch.as_tensor(y_pred).long().flatten()
    return torch.bincount(t * n + p, minlength=n * n).reshape(n, n).cpu().numpy()


def report(cm: np.ndarray, classes: Sequence[str] = CLASSES) -> dict:
    """Accuracy, macro F1 and per-class precision/recall/F1/support from a confusion matrix
    (a class never predicted has precision 0; one absent from the data has recall 0; the macro
    F1 averages the classes that occur in the labels or the predictions, like scikit-learn)."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = cm.sum()
    present = (support > 0) | (predicted > 0)   # as sklearn's macro average over seen labels
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


def _batch_logits(model: nn.Module, images: Tensor, batch_size: int, amp_dtype: torch.dtype | None,
                  channels_last: bool, tta_flip: bool):
    """Yield ``(start, logits)`` per batch of uint8 ``images`` (N, 48, 48): float32 logits
    (B, 7), or with ``tta_flip`` the log of the mean of the image's and its mirror's class
    probabilities (:func:`evaluate_arrays`). The caller holds no_grad and eval mode."""
    dev = images.device
    for i in range(0, len(images), batch_size):
        x = normalize(to_float(images[i:i + batch_size]))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = model(x)
            if tta_flip:
                xf = x.flip(-1)
                if channels_last:
                    xf = xf.contiguous(memory_format=torch.channels_last)
                mirrored = model(xf)
        logits = logits.float()
        if tta_flip:
            logits = torch.logsumexp(torch.stack([F.log_softmax(logits, 1),
                                                  F.log_softmax(mirrored.float(), 1)]), 0) - math.log(2)
        yield i, logits


@torch.no_grad()
def evaluate_arrays(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024,
                    amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                    tta_flip: bool = False) -> tuple[np.ndarray, float]:
    """Confusion matrix and summed cross-entropy of ``model`` on uint8 ``images`` (N, 48, 48)
    already on the model's device. Switches the model to eval mode (restores the previous mode).

    ``tta_flip``: test-time augmentation by mirroring -- the prediction is the mean of the class
    probabilities of each image and its left-right mirror, ``log p = logsumexp(log_softmax(f(x)),
    log_softmax(f(flip x))) - log 2`` (the loss is the cross-entropy of that mean)."""
    was = model.training
    model.eval()
    dev = images.device
    cm = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.long, device=dev)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    for i, logits in _batch_logits(model, images, batch_size, amp_dtype, channels_last, tta_flip):
        y = labels[i:i + len(logits)].long()
        loss += F.cross_entropy(logits, y, reduction="sum").double()
        cm += torch.bincount(y * NUM_CLASSES + logits.argmax(1), minlength=NUM_CLASSES ** 2)
    model.train(was)
    return cm.reshape(NUM_CLASSES, NUM_CLASSES).cpu().numpy(), float(loss)


@torch.no_grad()
def predict_arrays(model: nn.Module, images: Tensor, batch_size: int = 1024,
                   amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                   tta_flip: bool = False) -> np.ndarray:
    """The predicted class of every image, (N,) int64 on the CPU: the argmax that
    :func:`evaluate_arrays` counts into its confusion matrix (same batches, precision and TTA)."""
    was = model.training
    model.eval()
    out = [logits.argmax(1).cpu() for _, logits in
           _batch_logits(model, images, batch_size, amp_dtype, channels_last, tta_flip)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def write_report(rep: dict, out_dir: str | Path, usage: str, title: str = "",
                 plot: bool = True) -> tuple[Path, Path | None]:
    from .plots import plot_confusion

    run = RunDir(out_dir)
    js = run.eval_json(usage)
    _atomic_write(js, lambda f: f.write(json.dumps(rep, indent=2).encode()))
    if not plot:
        return js, None
    png = plot_confusion(rep["confusion_matrix"], CLASSES, run.confusion_png(usage),
                         title=title or f"{usage}: accuracy {100 * rep['accuracy']:.2f}%, "
                                        f"macro F1 {rep['macro_f1']:.4f}")
    return js, png


def format_report(rep: dict) -> str:
    lines = [f"n={rep['n']}  accuracy {100 * rep['accuracy']:.2f}%  macro F1 {rep['macro_f1']:.4f}",
             f"{'class':10s} {'precision':>9s} {'recall':>7s} {'f1':>6s} {'support':>8s}"]
    for c, r in rep["per_class"].items():
        lines.append(f"{c:10s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['support']:8d}")
    return "\n".join(lines)


def load_run_model(run: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu"):
    """(model, config, checkpoint dict) of a run directory written by ``pipelines.train``; the
    column is built from the checkpoint's saved spec when it has one (older runs: the config)."""
    from .config import Config
    from .models import build_model, load_run_graph

    rd = RunDir(run)
    if not rd.config.is_file():
        raise FileNotFoundError(f"--run {run}: not a training run ({rd.config} is missing)")
    cfg = Config.load(rd.config)
    ck = rd.checkpoint(checkpoint)
    if not ck.exists():
        raise FileNotFoundError(f"{ck}: no such checkpoint (run finished? try --checkpoint last)")
    state = load_checkpoint(ck)
    graph = load_run_graph(rd, cfg) if cfg.model == "bionic" else None
    model = build_model(cfg, graph, device=device, spec=state.get("column_spec"))
    model.load_state_dict(state["model"])
    return model, cfg, state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory (config.json, best.pt, graph/)")
    ap.add_argument("--data", default=None, help="FER-2013 CSV or image-folder root (default: the run's)")
    ap.add_argument("--usage", default="PublicTest", choices=USAGES)
    ap.add_argument("--checkpoint", default="best", help="best | final | last | path to a .pt")
    ap.add_argument("--out", default=None, help="output folder (default: the run directory)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache_root", default=None)
    ap.add_argument("--batch_size", type=int, default=1024)
    ap.add_argument("--tta_flip", default=None, type=parse_bool, metavar="BOOL",
                    help="average the predictions of each image and its mirror (default: the run's "
                         "config.tta_flip)")
    ap.add_argument("--predictions", action="store_true",
                    help="write predictions.npz (best.pt and final.pt on every evaluation usage) and "
                         "eval_<usage>_final.json instead; --usage, --checkpoint and --tta_flip do not apply")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = ap.parse_args(argv)
    return run_cli("evaluate", lambda: _main(a), debug=a.debug)


def _main(a: argparse.Namespace) -> int:
    from .config import Config

    if a.predictions:
        from .predictions import predictions_for_run

        out = Path(a.out or a.run)
        figures = predictions_for_run(a.run, a.data, a.cache_root, a.device, out)
        print(f"wrote {RunDir(out).predictions}: " + ", ".join(
            f"{k} {100 * v:.2f}%" if k.endswith("_acc") else f"{k} {v:.4f}" for k, v in figures.items()))
        return 0
    rd = RunDir(a.run)
    if not rd.config.is_file():
        raise FileNotFoundError(f"--run {a.run}: not a training run ({rd.config} is missing)")
    # the run's own precision / layout rule on the chosen device (pipelines.runtime)
    rt = runtime_of(Config.load(rd.config), device=a.device, threads=torch.get_num_threads())
    dev = rt.device
    model, cfg, state = load_run_model(a.run, a.checkpoint, device=dev)
    ds = load_fer2013(a.data or cfg.data, a.cache_root or cfg.cache_root)
    images, labels = ds.split(a.usage)
    x = torch.as_tensor(images).to(dev)
    y = torch.as_tensor(labels).to(dev)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    tta = cfg.tta_flip if a.tta_flip is None else a.tta_flip
    cm, loss = evaluate_arrays(model, x, y, a.batch_size, amp_dtype=rt.amp_dtype,
                               channels_last=rt.channels_last, tta_flip=tta)
    rep = report(cm)
    rep.update(loss=loss / max(1, rep["n"]), usage=a.usage, data=str(a.data or cfg.data), tta_flip=tta,
               checkpoint=str(a.checkpoint), epoch=state.get("epoch"), run=str(a.run), amp=rt.amp)
    js, png = write_report(rep, a.out or a.run, a.usage)
    print(f"{a.run} [{a.checkpoint}, epoch {state.get('epoch')}] on {a.usage} of {rep['data']}:")
    print(format_report(rep))
    print(f"wrote {js} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
