"""Train BioNIC (or the plain CNN) on FER-2013: one readable loop, GPU first, CPU fallback.

    python -m pipelines.train                                   # data_cache/fer2013/fer2013.csv (README)
    python -m pipelines.train --preset paper --seed 1 --out runs/paper-s1 [--data PATH]
    python -m pipelines.train --resume runs/paper-s1            # continues where it stopped
    torchrun --nproc_per_node 2 -m pipelines.train ...          # data-parallel (gloo on CPU, NCCL on GPU)

Every field of :class:`pipelines.config.Config` is an option (the nested column spec and
augmentation under their flat names: ``--hebbian_rate 0``, ``--aug_rotate 5``); ``--preset`` sets
a group first. The loop reads like nanoGPT's: :func:`setup` builds a :class:`TrainingRun` (data on
the device as uint8, model, optimiser and :class:`~pipelines.optim.LRSchedule`, RNGs; restored by
:func:`pipelines.checkpoint.load_run` from ``last.pt`` on resume); then, per epoch,
:func:`run_epoch` (optimiser steps, each batch augmented on the device and followed by the
column's ``plasticity_step()``), :func:`end_epoch` (validation on ``PublicTest``, selection,
schedule, stopping) and :func:`save` (``best.pt``, ``last.pt``, metrics); :func:`finish` writes
``final.pt`` and the best checkpoint's reports (``PrivateTest`` is only ever evaluated there).
Checkpoints carry every RNG state, so a resumed run ends with the weights of an uninterrupted one.
A NaN/inf loss or plasticity update stops the run naming the epoch and step; ``last.pt`` of the
last finished epoch is left intact. Run folder: :mod:`pipelines.run_dir`; device, precision and
threads: :mod:`pipelines.runtime`; data parallel: :mod:`pipelines.distributed`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import connectomics.build
from connectomics import load_graph

from .augment import BatchAugment, normalize, to_float
from .checkpoint import (
    best_subset, graph_checksum, graph_record, load_checkpoint, load_run, make_checkpoint, save_checkpoint,
)
from .config import Config, add_config_arguments, config_from_args, validate
from .distributed import (Ranks, broadcast_module, data_parallel, gather_recorded_activity, process_group,
                          rng_states, set_rng_states)
from .errors import Interrupted, UserError, run_cli
from .evaluate import evaluate_arrays, report, write_report
from .fer2013 import FER2013, USAGES, load_fer2013
from .models import build_model, count_parameters, describe
from .optim import LRSchedule, make_optimizer
from .run_dir import RunDir
from .runtime import Runtime, configure_torch, dynamo_fallback, restore_torch_settings, runtime_of


class TrainingDiverged(UserError):
    """The loss (or a plasticity update) became NaN/inf; the last good checkpoint is intact."""


def noise_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank's training-noise stream (synaptic noise, dropout) from optimiser ``step``."""
    return seed * 1000 + 17 + rank + 7919 * step


# -- state --------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Progress of a run (saved in every checkpoint as ``state``, ``dataclasses.asdict``)."""

    epoch: int = 0                      # epochs finished
    step: int = 0                       # optimiser steps taken
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0                 # epochs since the best (early stopping)
    history: list[dict] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        """Also reads a state dict with plateau fields beside the others (checkpoints whose
        schedule state is not under ``schedule``): fields :class:`TrainState` lacks are ignored."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class TrainingData:
    """The images of a run on its device: the training split and this rank's validation shard."""

    dataset: FER2013             # the whole decoded source (the final reports read its other usages)
    train_images: Tensor         # (N, 1, 48, 48) uint8
    train_labels: Tensor         # (N,) int64
    val_images: Tensor           # (M, 48, 48) uint8, this rank's shard
    val_labels: Tensor           # (M,) int64
    n_val_images: int            # validation images over all ranks


@dataclass
class TrainingRun:
    """The state of one training run: what :func:`setup` builds and the loop reads and updates."""

    cfg: Config
    runtime: Runtime
    ranks: Ranks
    run_dir: RunDir
    data: TrainingData
    steps_per_epoch: int
    graph_checksum: str          # of the graph the column was compiled from ("" for the plain CNN)
    model: nn.Module             # the model itself: what checkpoints hold and plasticity updates
    train_net: nn.Module         # what the optimiser steps call (model, DDP- and/or compile-wrapped)
    eval_net: nn.Module          # what validation calls (model, compile-wrapped)
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    shuffle_rng: torch.Generator   # order of the training images (CPU)
    augment_rng: torch.Generator   # augmentation parameters (on the device)
    augment: BatchAugment
    state: TrainState
    hooks: dict[str, Callable] = field(default_factory=dict)
    lr: float = 0.0              # of the last step
    graph_record: dict = field(default_factory=dict)   # the graph's datastack, version, query, checksum

    @property
    def plastic(self) -> bool:
        return self.cfg.model == "bionic" and (self.cfg.hebbian_rate > 0 or self.cfg.homeostasis)

    def diverged(self, step: int, what: str) -> TrainingDiverged:
        """The error that stops the run at optimiser ``step``, naming the last good checkpoint."""
        last, epoch = self.run_dir.last, self.state.epoch
        where = f"{last} (end of epoch {epoch})" if last.exists() else "none (no epoch finished)"
        return TrainingDiverged(f"training diverged at epoch {epoch + 1}, step {step}: {what}. Stopped; "
                                f"the last good checkpoint is {where}. Lower --lr / --hebbian_rate or "
                                "check the data.")


# -- setup --------------------------------------------------------------------------------------
def _load_data(cfg: Config, ranks: Ranks, device: torch.device, refresh: bool) -> TrainingData:
    started = time.perf_counter()
    with ranks.main_first():   # rank 0 decodes and caches first
        dataset = load_fer2013(cfg.data, cfg.cache_root, refresh=refresh and ranks.main)
    ranks.log(f"data: {len(dataset)} images from {cfg.data} "
              f"({'cache' if dataset.meta.get('from_cache') else 'decoded'}, "
              f"{time.perf_counter() - started:.2f} s); usages {', '.join(dataset.usages)}")
    train_x, train_y = (a[:cfg.limit_train or None] for a in dataset.split(cfg.train_usage))   # 0: all
    val_x, val_y = (a[:cfg.limit_val or None] for a in dataset.split(cfg.val_usage))
    shard = np.array_split(np.arange(len(val_y)), ranks.world)[ranks.rank]
    return TrainingData(dataset,
                        torch.as_tensor(np.ascontiguousarray(train_x)).unsqueeze(1).to(device),
                        torch.as_tensor(train_y.astype(np.int64)).to(device),
                        torch.as_tensor(np.ascontiguousarray(val_x[shard])).to(device),
                        torch.as_tensor(val_y[shard].astype(np.int64)).to(device),
                        len(val_y))


def _new_run_graph(cfg: Config, ranks: Ranks):
    """The graph of a new bionic run: ``--graph``, else the default graph (the real V1 column, or
    the surrogate of ``--graph_seed``; rank 0 builds and caches it first); ``None`` for the plain CNN."""
    if cfg.model != "bionic":
        return None
    with ranks.main_first():
        if cfg.graph:
            return load_graph(cfg.graph)
        return connectomics.build.build_default_graph(cfg.cache_root, seed=cfg.graph_seed,
                                                      source=cfg.graph_source)


def _restore(training: TrainingRun, last: dict) -> None:
    """Optimiser, schedule, state and RNG streams from a ``last.pt`` (the weights are loaded by
    :func:`pipelines.checkpoint.load_run`)."""
    ranks = training.ranks
    training.optimizer.load_state_dict(last["optimizer"])
    training.state = TrainState.from_dict(last["state"])
    training.schedule.load_state_dict(last.get("schedule", last["state"]))   # else in "state"
    rng = last["rng"]
    training.shuffle_rng.set_state(rng["shuffle"])
    training.augment_rng.set_state(rng["augment"])
    if not set_rng_states(ranks, training.runtime.device, rng["torch_per_rank"], rng.get("cuda_per_rank")):
        ranks.log(f"warning: checkpoint from {len(rng['torch_per_rank'])} rank(s), resuming on "
                  f"{ranks.world}: training noise streams are re-seeded")
        torch.manual_seed(noise_seed(training.cfg.seed, ranks.rank, training.state.step))
    ranks.log(f"resumed {training.run_dir.root} at epoch {training.state.epoch} (step {training.state.step})")


def setup(cfg: Config, runtime: Runtime, ranks: Ranks, resume: bool, refresh: bool = False,
          hooks: dict[str, Callable] | None = None) -> TrainingRun:
    """Data, graph, model, optimiser, schedule and RNGs of a new run, or of ``last.pt``."""
    run_dir = RunDir(cfg.out)
    if cfg.batch_size % ranks.world:
        raise ValueError(f"--batch_size {cfg.batch_size} is not divisible by the {ranks.world} ranks")
    if resume and not run_dir.last.exists():
        raise FileNotFoundError(f"--resume {run_dir.root}: no last.pt there (nothing finished an epoch yet)")
    if not resume and run_dir.last.exists():
        raise FileExistsError(f"{run_dir.root} already holds a run (last.pt); use --resume {run_dir.root} "
                              "or another --out")
    last, graph = None, None
    if resume:
        torch.manual_seed(cfg.seed)   # as a new run's initialisation; the weights are last.pt's
        model, _, last = load_run(run_dir.root, "last", runtime.device, cfg=cfg)
        if cfg.threads == 0 and last.get("threads"):
            runtime = replace(runtime, threads=int(last["threads"]))   # same threads: same float sums
    configure_torch(runtime)
    data = _load_data(cfg, ranks, runtime.device, refresh)
    steps_per_epoch = len(data.train_labels) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.train_labels)} training images < --batch_size {cfg.batch_size}")
    if not resume:
        graph = _new_run_graph(cfg, ranks)
        torch.manual_seed(cfg.seed)   # the model's initialisation
        model = build_model(cfg, graph, device=runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ranks.log(describe(model))
    torch.manual_seed(noise_seed(cfg.seed, ranks.rank))
    training = TrainingRun(
        cfg=cfg, runtime=runtime, ranks=ranks, run_dir=run_dir, data=data, steps_per_epoch=steps_per_epoch,
        graph_checksum=last["graph_checksum"] if last is not None else graph_checksum(graph),
        model=model, train_net=model, eval_net=model, optimizer=make_optimizer(cfg, model),
        schedule=LRSchedule(cfg, cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))),
        shuffle_rng=torch.Generator().manual_seed(cfg.seed),
        augment_rng=torch.Generator(device=runtime.device).manual_seed(cfg.seed + 1),
        augment=BatchAugment(cfg.augment_config()), state=TrainState(), hooks=hooks or {},
        graph_record=last.get("graph", {}) if last is not None else graph_record(graph))
    if last is not None:
        _restore(training, last)
    elif ranks.main:
        cfg.save(run_dir.config)
        if graph is not None:
            graph.save(run_dir.graph)
    ranks.barrier()
    training.train_net = data_parallel(model, ranks, runtime.device)
    if runtime.compile:
        training.train_net, training.eval_net = torch.compile(training.train_net), torch.compile(model)
    ranks.log(f"device {runtime.device}{f' x{ranks.world} ranks' if ranks.world > 1 else ''}; amp "
              f"{runtime.amp}; compile {runtime.compile}; channels_last {runtime.channels_last}; "
              f"deterministic {runtime.deterministic}; threads {runtime.threads}; {len(data.train_labels)} "
              f"train / {data.n_val_images} {cfg.val_usage} images; {steps_per_epoch} steps/epoch of "
              f"{cfg.batch_size}")
    return training


# -- the loop -----------------------------------------------------------------------------------
def train_step(training: TrainingRun, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One optimiser step (and plasticity step) on this rank's shard ``x`` (B, 1, 48, 48), ``y``
    (B,); returns (the shard's summed loss, its logits (B, 7)), detached."""
    cfg, ranks, step = training.cfg, training.ranks, training.state.step
    training.lr = training.schedule.lr(step)
    for group in training.optimizer.param_groups:
        group["lr"] = training.lr
    if "before_step" in training.hooks:
        training.hooks["before_step"](step, training.model)
    try:
        with training.runtime.autocast():
            logits = training.train_net(x)
    except FloatingPointError as exc:   # the recurrent column's dynamics exploded
        raise training.diverged(step, str(exc)) from None
    logits = logits.float()
    loss_sum = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")
    training.optimizer.zero_grad(set_to_none=True)
    (loss_sum * (ranks.world / cfg.batch_size)).backward()   # the global batch's mean gradient
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(training.model.parameters(), cfg.grad_clip)
    training.optimizer.step()
    if training.plastic:
        gathered = ranks.world > 1 and gather_recorded_activity(training.model, ranks.world)
        try:
            changed = training.model.plasticity_step()
        except FloatingPointError as exc:
            raise training.diverged(step, f"plasticity step: {exc}") from None
        if ranks.world > 1 and changed and not gathered:
            broadcast_module(training.model.column)   # unknown recording: rank 0's update for all
    training.state.step = step + 1
    if "after_step" in training.hooks:
        training.hooks["after_step"](step, training.model)
    return loss_sum.detach(), logits.detach()


def _batch(training: TrainingRun, order: Tensor, it: int, shard: slice) -> tuple[Tensor, Tensor]:
    """This rank's shard of batch ``it`` of the epoch's ``order``: images (B, 1, 48, 48), labels (B,)."""
    cfg = training.cfg
    idx = order[it * cfg.batch_size:(it + 1) * cfg.batch_size][shard]
    x = to_float(training.data.train_images[idx])
    if cfg.augment:
        params = training.augment.sample(cfg.batch_size, training.augment_rng)   # the global batch's
        x = training.augment.apply(x, BatchAugment.slice(params, shard))
    x = normalize(x)
    if training.runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, training.data.train_labels[idx]


def run_epoch(training: TrainingRun) -> dict | None:
    """One pass over the shuffled training split. Returns the epoch's summed loss and correct
    count (over all ranks) and its time, or None when ``max_steps`` stopped the run."""
    from tqdm.auto import tqdm

    cfg, ranks, device = training.cfg, training.ranks, training.runtime.device
    training.train_net.train()
    order = torch.randperm(len(training.data.train_labels), generator=training.shuffle_rng).to(device)
    shard_size = cfg.batch_size // ranks.world
    shard = slice(ranks.rank * shard_size, (ranks.rank + 1) * shard_size)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
    started = time.perf_counter()
    bar = tqdm(range(training.steps_per_epoch), desc=f"epoch {training.state.epoch + 1}/{cfg.epochs}",
               leave=False, disable=not (cfg.progress and ranks.main), mininterval=1.0)
    for it in bar:
        if cfg.max_steps and training.state.step >= cfg.max_steps:
            bar.close()
            ranks.log(f"stopped at step {training.state.step} (max_steps)")
            return None
        x, y = _batch(training, order, it, shard)
        step = training.state.step
        step_loss, logits = train_step(training, x, y)
        loss_sum += step_loss
        correct += (logits.argmax(1) == y).sum()
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(step_loss), step, first_bad_step)
        if (it + 1) % cfg.log_every == 0 or it + 1 == training.steps_per_epoch:
            if int(ranks.max_(first_bad_step)) >= 0:
                bar.close()
                raise training.diverged(int(first_bad_step), "non-finite loss")
            if ranks.main and cfg.progress:
                seen = (it + 1) * shard_size
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}",
                                acc=f"{100 * int(correct) / seen:.1f}%", lr=f"{training.lr:.2e}")
    bar.close()
    totals = ranks.sum_(torch.stack([loss_sum, correct.double()]))
    return {"loss_sum": float(totals[0]), "correct": float(totals[1]),
            "seconds": time.perf_counter() - started, "t0": started}


def validate_epoch(training: TrainingRun) -> tuple[dict, float]:
    """(report, summed loss) of the model on the validation usage (all ranks' shards)."""
    try:
        confusion, val_loss = evaluate_arrays(training.eval_net, training.data.val_images,
                                              training.data.val_labels, training.cfg.eval_batch_size,
                                              training.runtime.amp_dtype, training.runtime.channels_last,
                                              tta_flip=training.cfg.tta_flip)
    except FloatingPointError as exc:
        raise training.diverged(training.state.step - 1, f"validation: {exc}") from None
    if training.ranks.world > 1:
        device = training.runtime.device
        confusion = training.ranks.sum_(torch.as_tensor(confusion, device=device)).cpu().numpy()
        val_loss = float(training.ranks.sum_(torch.tensor(val_loss, dtype=torch.float64, device=device)))
    return report(confusion), val_loss


def end_epoch(training: TrainingRun, epoch: dict) -> tuple[dict, bool, str]:
    """Validation, model selection, the schedule's plateau rule and the stopping rules after an
    epoch (``epoch``: what :func:`run_epoch` returned). Returns (metrics row, improved, stop
    reason or "")."""
    cfg, state = training.cfg, training.state
    seen = training.steps_per_epoch * cfg.batch_size
    rep, val_loss = validate_epoch(training)
    row = {"epoch": state.epoch + 1, "step": state.step, "lr": training.lr,
           "train_loss": epoch["loss_sum"] / seen, "train_acc": epoch["correct"] / seen,
           "val_loss": val_loss / max(1, rep["n"]), "val_acc": rep["accuracy"], "val_f1": rep["macro_f1"],
           "epoch_seconds": round(time.perf_counter() - epoch["t0"], 3),
           "train_images_per_s": round(seen / epoch["seconds"], 1)}
    if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
        raise training.diverged(state.step - 1, "non-finite loss")
    metric = row[cfg.select_metric]
    better = (lambda a, b: a < b) if cfg.select_metric == "val_loss" else (lambda a, b: a > b)
    improved = state.best_metric is None or better(metric, state.best_metric)
    row["is_best"] = bool(improved)
    if improved:
        state.best_metric, state.best_epoch, state.bad_epochs = float(metric), state.epoch + 1, 0
    else:
        state.bad_epochs += 1
    training.schedule.end_epoch(metric, better)
    state.history.append(row)
    state.epoch += 1
    stop = ""
    if cfg.patience and state.bad_epochs >= cfg.patience:
        stop = f"early stop: no {cfg.select_metric} improvement for {cfg.patience} epochs"
    if cfg.max_minutes and not stop:
        spent = training.ranks.max_(torch.tensor(sum(h["epoch_seconds"] for h in state.history),
                                                 dtype=torch.float64, device=training.runtime.device))
        if float(spent) >= 60 * cfg.max_minutes:
            stop = f"time budget: {float(spent) / 60:.1f} of {cfg.max_minutes:g} minutes used"
    if state.epoch >= cfg.epochs or stop:
        state.finished = True
    return row, improved, stop


def full_checkpoint(training: TrainingRun) -> dict[str, Any]:
    """The checkpoint of the current state (collective under DDP: every rank calls it)."""
    cpu_states, cuda_states = rng_states(training.ranks, training.runtime.device)
    return make_checkpoint(
        model=training.model, optimizer=training.optimizer, state=asdict(training.state),
        schedule=training.schedule.state_dict(),
        rng={"shuffle": training.shuffle_rng.get_state(), "augment": training.augment_rng.get_state(),
             "torch_per_rank": cpu_states, "cuda_per_rank": cuda_states},
        cfg=training.cfg, world_size=training.ranks.world, graph_checksum=training.graph_checksum,
        graph=training.graph_record)


def save(training: TrainingRun, row: dict, improved: bool) -> None:
    """After an epoch: ``best.pt`` when improved, ``last.pt``, the metrics files, the log line."""
    checkpoint = full_checkpoint(training)
    if not training.ranks.main:
        return
    run_dir = training.run_dir
    if improved:
        save_checkpoint(run_dir.best, best_subset(checkpoint, row["epoch"], row[training.cfg.select_metric]))
    save_checkpoint(run_dir.last, checkpoint)
    run_dir.write_metrics(training.state.history, summarize(training))
    training.ranks.log(
        f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%  "
        f"| {training.cfg.val_usage} loss {row['val_loss']:.4f}  acc {100 * row['val_acc']:.2f}%  "
        f"F1 {row['val_f1']:.4f}{'  *' if improved else ''}  | lr {training.lr:.2e}  "
        f"{row['train_images_per_s']:.0f} img/s")


def summarize(training: TrainingRun) -> dict:
    cfg, state, runtime = training.cfg, training.state, training.runtime
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), None)
    return {"preset": cfg.preset, "model": cfg.model, "seed": cfg.seed,
            "parameters": count_parameters(training.model), "epochs_run": state.epoch, "steps": state.step,
            "finished": state.finished, "best_epoch": state.best_epoch, "select_metric": cfg.select_metric,
            "best_val_acc": best["val_acc"] if best else None, "best_val_f1": best["val_f1"] if best else None,
            "device": str(runtime.device), "world_size": training.ranks.world, "amp": runtime.amp,
            "compile": runtime.compile, "threads": torch.get_num_threads(), "torch": torch.__version__}


def finish(training: TrainingRun) -> dict:
    """``final.pt``, the curves and the best checkpoint's reports on every evaluation usage."""
    summary = summarize(training)
    checkpoint = full_checkpoint(training)   # collective under DDP
    if training.ranks.main:
        save_checkpoint(training.run_dir.final, checkpoint)
        _final_reports(training, summary)
        training.run_dir.write_metrics(training.state.history, summary)
    training.ranks.barrier()
    return summary


def _final_reports(training: TrainingRun, summary: dict) -> None:
    from .plots import plot_curves
    from .predictions import store_predictions

    cfg, model, dev = training.cfg, training.model, training.runtime.device
    if cfg.plots:
        plot_curves(training.state.history, training.run_dir.curves,
                    title=f"{cfg.preset} seed {cfg.seed}: best {cfg.val_usage} "
                          f"{100 * (summary['best_val_acc'] or 0):.2f}% (epoch {summary['best_epoch']})")
    best = load_checkpoint(training.run_dir.best)
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best["model"])
    try:
        for usage in USAGES[1:]:   # PublicTest (selection set) and PrivateTest if present: reports only
            if usage not in training.data.dataset.usages:
                continue
            xi, yi = training.data.dataset.split(usage)
            if cfg.limit_val:   # the same subset the epochs were selected on
                xi, yi = xi[:cfg.limit_val], yi[:cfg.limit_val]
            cm, loss = evaluate_arrays(model, torch.as_tensor(xi).to(dev),
                                       torch.as_tensor(yi.astype(np.int64)).to(dev),
                                       cfg.eval_batch_size, training.runtime.amp_dtype,
                                       training.runtime.channels_last, tta_flip=cfg.tta_flip)
            rep = report(cm)
            rep.update(loss=loss / max(1, rep["n"]), usage=usage, checkpoint="best", amp=training.runtime.amp,
                       epoch=best["epoch"], data=cfg.data, tta_flip=cfg.tta_flip)
            write_report(rep, training.run_dir.root, usage, plot=cfg.plots)
            summary[f"best_{usage}_acc"] = rep["accuracy"]
            summary[f"best_{usage}_f1"] = rep["macro_f1"]
            print(f"best checkpoint (epoch {best['epoch']}) on {usage}: accuracy "
                  f"{100 * rep['accuracy']:.2f}%, macro F1 {rep['macro_f1']:.4f}")
    finally:
        model.load_state_dict(final_state)
    summary.update(store_predictions(training.run_dir.root, model, best["model"], training.data.dataset, cfg,
                                     training.runtime, plot=cfg.plots, best_epoch=best["epoch"],
                                     final_epoch=training.state.epoch))


def loop(training: TrainingRun) -> dict:
    """Epochs until done, stopped or diverged; then :func:`finish`."""
    cfg, state, ranks = training.cfg, training.state, training.ranks
    if state.finished:
        ranks.log("that run already finished; nothing to do")
        return {"finished": True, **summarize(training)}
    while state.epoch < cfg.epochs:
        epoch = run_epoch(training)
        if epoch is None:
            return {"stopped": True, "step": state.step, "epoch": state.epoch}
        row, improved, stop = end_epoch(training, epoch)
        save(training, row, improved)
        ranks.barrier()
        if stop:
            ranks.log(stop)
            break
        if cfg.stop_after_epoch and state.epoch == cfg.stop_after_epoch and not state.finished:
            ranks.log(f"stopped after epoch {state.epoch} (stop_after_epoch)")
            return {"stopped": True, "step": state.step, "epoch": state.epoch}
    return finish(training)


# -- the run ------------------------------------------------------------------------------------
def train(cfg: Config, resume: bool = False, hooks: dict[str, Callable] | None = None,
          refresh: bool = False) -> dict:
    """Train according to ``cfg`` (``resume``: continue ``cfg.out/last.pt``). Returns the summary.

    ``refresh``: decode the FER-2013 source again and rewrite its cache. Rank 0 holds the run
    folder's lock (:meth:`pipelines.run_dir.RunDir.lock`) for the whole run. ``hooks`` (tests,
    tools): ``before_step(step, model)`` and ``after_step(step, model)`` are called around every
    optimiser step (``step`` counts from 0 over the whole run; ``model`` is the unwrapped module)."""
    validate(cfg)
    ranks = Ranks.from_env()
    runtime = runtime_of(cfg, local_rank=ranks.local_rank, local_processes=ranks.local_world)
    with restore_torch_settings(), process_group(ranks, runtime.device), \
            RunDir(cfg.out).lock() if ranks.main else contextlib.nullcontext(), dynamo_fallback():
        return loop(setup(cfg, runtime, ranks, resume, refresh, hooks))


# -- CLI ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR "
                    "from its last.pt (its config.json; options given here override it)")
    ap.add_argument("--refresh", action="store_true", help="decode the FER-2013 source again")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    add_config_arguments(ap)
    ns = ap.parse_args(argv)
    return run_cli("train", lambda: _main(ns), debug=ns.debug)


def _main(ns: argparse.Namespace) -> int:
    if ns.resume:
        run_dir = RunDir(ns.resume)
        if not run_dir.config.is_file():
            raise FileNotFoundError(f"--resume {ns.resume}: no run there ({run_dir.config} is missing)")
        base = Config.load(run_dir.config)
        base = replace(base, stop_after_epoch=0, max_steps=0, out=str(ns.resume))
        cfg, explicit = config_from_args(ns, base=base)
        changed = {k: v for k, v in explicit.items() if k != "out"}
        if changed and int(os.environ.get("RANK", "0")) == 0:
            print(f"resume: overriding {changed} (the result will differ from an uninterrupted run)")
    else:
        cfg, _ = config_from_args(ns)
    try:
        summary = train(cfg, resume=bool(ns.resume), refresh=ns.refresh)
    except KeyboardInterrupt:
        last = RunDir(cfg.out).last
        raise Interrupted(f"interrupted; {last} holds the last finished epoch: continue with --resume "
                          f"{cfg.out}" if last.exists() else "interrupted before an epoch finished") from None
    if summary.get("finished") and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "parameters"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
