"""Train BioNIC (or the plain CNN) on FER-2013: one readable loop, GPU first, CPU fallback.

    python -m pipelines.train                                   # data_cache/fer2013/fer2013.csv (README)
    python -m pipelines.train --data PATH/fer2013.csv.gz        # or an image-folder root
    python -m pipelines.train --preset paper --seed 1 --out runs/paper-s1
    python -m pipelines.train --resume runs/paper-s1            # continues where it stopped
    torchrun --nproc_per_node 2 -m pipelines.train ...          # data-parallel (gloo on CPU, NCCL on GPU)

Every field of :class:`pipelines.config.Config` is an option, the nested column spec and
augmentation under their flat names (``--lr 1e-3``, ``--hebbian_rate 0``,
``--lateral_inhibition false`` ...); ``--preset paper|paper400|cnn|cnn400|wide`` sets a group first.

* Data: the whole split lives on the device as uint8; each step indexes a batch, augments it on
  the device (:mod:`pipelines.augment`, one seeded generator) and normalises it -- no per-sample
  Python. Train on ``Training``, select on ``PublicTest`` (early stopping, ``best.pt``);
  ``PrivateTest``, when the data has it, is only evaluated at the end.
* Each optimiser step is followed by ``model.plasticity_step()`` (Hebbian + homeostatic update of
  the column; a no-op when off).
* The run folder's layout is :mod:`pipelines.run_dir` (``config.json``, ``graph/``, metrics,
  ``last.pt`` after every epoch -- what ``--resume`` reads --, ``best.pt``, ``final.pt``, reports);
  one training at a time holds its lock. Checkpoints (:mod:`pipelines.checkpoint`) hold only
  tensors and plain types: weights, optimiser, schedule, :class:`TrainState`, every RNG state, the
  resolved column spec and the graph's checksum, so a resumed run ends with exactly the weights of
  an uninterrupted one (on CPU: same thread count, which a resumed run keeps).
* Device, precision and threads: :mod:`pipelines.runtime` (one rule for training and evaluation).

The loop reads like nanoGPT's: :func:`setup` builds a :class:`Trainer` (data, model, optimiser,
:class:`LRSchedule`, RNGs; restored from ``last.pt`` on resume); then, per epoch,
:func:`run_epoch` (the optimiser steps), :func:`end_epoch` (validation, selection, schedule,
stopping) and :func:`save` (checkpoints, metrics); :func:`finish` writes the final reports.
* A NaN/inf loss (or the ``FloatingPointError`` of the Hebbian step) stops the run with a message
  naming the epoch and step; ``last.pt`` of the last finished epoch is left intact.
* Data parallel (torchrun): the same shuffled global batch and the same augmentation parameters
  on every rank; rank r takes its contiguous shard; the loss is scaled so the averaged gradient
  is the global batch's; before each Hebbian step the ranks all-gather the column's recorded
  activity, so every rank applies the identical full-batch update. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .augment import BatchAugment, normalize, to_float
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, add_config_arguments, config_from_args, validate
from .errors import UserError, run_cli
from .evaluate import evaluate_arrays, report, write_report
from connectomics.atomic_io import atomic_write as _atomic_write

from .fer2013 import USAGES, load_fer2013
from .models import build_model, column_spec_of, count_parameters, describe, graph_checksum, load_run_graph
from .run_dir import RunDir
from .runtime import Runtime, dynamo_fallback, runtime_of


class TrainingDiverged(UserError):
    """The loss (or a plasticity update) became NaN/inf; the last good checkpoint is intact."""


def default_graph(cache_root: str | Path = "data_cache", seed: int = 0, source: str = "column"):
    """The default connectome when no ``--graph`` is given, built (or loaded from the cache) by
    ``connectomics.build.build_default_graph``: ``source="column"`` the real MICrONS V1 column
    bundled with the package, ``"surrogate"`` the synthetic column of ``seed``."""
    from connectomics.build import build_default_graph

    return build_default_graph(cache_root=cache_root, seed=seed, source=source)


# ------------------------------------------------------------------------------------------------
# learning rate
# ------------------------------------------------------------------------------------------------
class LRSchedule:
    """The learning rate of every optimiser step: ``cfg.lr`` x the step-wise factor of
    ``cfg.lr_schedule`` (linear warm-up then cosine; one-cycle; constant) x the plateau scale,
    which ``plateau`` lowers by ``plateau_factor`` (not below ``min_lr_ratio``) when the selection
    metric has not improved for more than ``plateau_patience`` epochs."""

    def __init__(self, cfg: Config, total_steps: int, warmup_steps: int) -> None:
        self.cfg, self.total_steps, self.warmup_steps = cfg, total_steps, warmup_steps
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self.scale = 1.0

    def factor(self, step: int) -> float:
        """The step-wise multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based)."""
        cfg, total, warm = self.cfg, self.total_steps, self.warmup_steps
        if cfg.lr_schedule == "onecycle":
            w = warm or max(1, int(0.3 * total))
            if step < w:   # cosine warm-up from lr/25
                return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * (step + 1) / w))
            t = min(1.0, (step - w) / max(1, total - w))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0  # constant / plateau

    def lr(self, step: int) -> float:
        return self.cfg.lr * self.factor(step) * self.scale

    def end_epoch(self, metric: float, better: Callable[[float, float], bool]) -> None:
        """The plateau rule, once per epoch with the selection metric."""
        if self.cfg.lr_schedule != "plateau":
            return
        if self.plateau_best is None or better(metric, self.plateau_best):
            self.plateau_best, self.plateau_bad = float(metric), 0
            return
        self.plateau_bad += 1
        if self.plateau_bad > self.cfg.plateau_patience:
            self.scale = max(self.scale * self.cfg.plateau_factor, self.cfg.min_lr_ratio)
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad, "lr_scale": self.scale}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.plateau_best, self.plateau_bad, self.scale = d["plateau_best"], d["plateau_bad"], d["lr_scale"]


def lr_factor(cfg: Config, step: int, total_steps: int, warmup_steps: int) -> float:
    """:meth:`LRSchedule.factor` as a function."""
    return LRSchedule(cfg, total_steps, warmup_steps).factor(step)


# ------------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Progress of a run (saved in every checkpoint as ``state``)."""

    epoch: int = 0                      # epochs finished
    step: int = 0                       # optimiser steps taken
    best_metric: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0                 # epochs since the best (early stopping)
    history: list[dict] = field(default_factory=list)
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        """Also reads the state of older checkpoints (which held the plateau fields here)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class Dist:
    """This process's place in a data-parallel run (torchrun's environment)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)


@dataclass
class Trainer:
    """Everything :func:`setup` builds; the loop functions read and update it."""

    cfg: Config
    rt: Runtime
    dd: Dist
    run: RunDir
    ds: Any                      # pipelines.fer2013.FER2013
    X: torch.Tensor              # (N, 1, 48, 48) uint8 training images on the device
    Y: torch.Tensor              # (N,) int64
    XV: torch.Tensor             # this rank's validation shard (M, 48, 48) uint8
    YV: torch.Tensor
    n_val: int                   # validation images over all ranks
    steps_per_epoch: int
    graph: Any
    raw: nn.Module               # the model
    net: nn.Module               # what the steps call (DDP / compiled)
    eval_net: nn.Module
    opt: torch.optim.Optimizer
    sched: LRSchedule
    g_shuffle: torch.Generator
    g_aug: torch.Generator
    aug: BatchAugment
    state: TrainState
    hooks: dict[str, Callable] = field(default_factory=dict)
    lr: float = 0.0              # of the last step

    @property
    def plastic(self) -> bool:
        return self.cfg.model == "bionic" and (self.cfg.hebbian_rate > 0 or self.cfg.homeostasis)


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices/kernels only (not biases, norms, thresholds)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW, fused where available (one kernel per parameter group instead of many small ops)."""
    try:
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                 betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                 betas=(cfg.beta1, cfg.beta2))


def write_metrics(out: Path, history: list[dict], summary: dict) -> None:
    run = RunDir(out)
    if history:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(history[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(history)
        _atomic_write(run.metrics_csv, lambda f: f.write(buf.getvalue().encode()))
    _atomic_write(run.metrics_json,
                  lambda f: f.write(json.dumps({"summary": summary, "epochs": history}, indent=2).encode()))


def gather_recorded_activity(model: nn.Module, world: int) -> bool:
    """Data parallel: replace each column layer's recorded activity (its shard of the batch) by the
    whole batch's, concatenated in rank order. Returns False if the column records nothing we know."""
    layers = getattr(getattr(model, "column", None), "layers", None)
    if layers is None:
        return False
    found = False
    for layer in layers.values():
        post = getattr(layer, "last_post", None)
        if post is None:
            continue
        found = True
        layer.last_post = _all_gather_cat(post, world)
        layer.last_pre = {k: _all_gather_cat(v, world) for k, v in layer.last_pre.items()}
    return found


def _all_gather_cat(t: torch.Tensor, world: int) -> torch.Tensor:
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    return torch.cat(parts, 0)


def _broadcast_module(mod: nn.Module) -> None:
    with torch.no_grad():
        for t in list(mod.parameters()) + list(mod.buffers()):
            dist.broadcast(t.data, 0)


def _diverged_msg(out: Path, epoch: int, step: int, what: str) -> str:
    last = RunDir(out).last
    where = f"{last} (end of epoch {epoch})" if last.exists() else "none (no epoch finished)"
    return (f"training diverged at epoch {epoch + 1}, step {step}: {what}. Stopped; the last good "
            f"checkpoint is {where}. Lower --lr / --hebbian_rate or check the data.")


# ------------------------------------------------------------------------------------------------
# setup
# ------------------------------------------------------------------------------------------------
def _configure_torch(rt: Runtime) -> None:
    torch.set_num_threads(rt.threads)
    cuda = rt.device.type == "cuda"
    if rt.deterministic:
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif cuda:
        torch.backends.cudnn.benchmark = True
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _load_data(cfg: Config, dd: Dist, dev: torch.device, refresh: bool):
    """(dataset, X, Y, XV, YV, n_val): the training split and this rank's validation shard."""
    t0 = time.perf_counter()
    if not dd.main:
        dd.barrier()   # rank 0 decodes and caches first
    ds = load_fer2013(cfg.data, cfg.cache_root, refresh=refresh and dd.main)
    if dd.main:
        dd.barrier()
    dd.log(f"data: {len(ds)} images from {cfg.data} ({'cache' if ds.meta.get('from_cache') else 'decoded'}, "
           f"{time.perf_counter() - t0:.2f} s); usages {', '.join(ds.usages)}")
    xtr, ytr = ds.split(cfg.train_usage)
    xva, yva = ds.split(cfg.val_usage)
    if cfg.limit_train:
        xtr, ytr = xtr[:cfg.limit_train], ytr[:cfg.limit_train]
    if cfg.limit_val:
        xva, yva = xva[:cfg.limit_val], yva[:cfg.limit_val]
    X = torch.as_tensor(np.ascontiguousarray(xtr)).unsqueeze(1).to(dev)   # (N, 1, 48, 48) uint8
    Y = torch.as_tensor(ytr.astype(np.int64)).to(dev)
    vshard = np.array_split(np.arange(len(yva)), dd.world)[dd.rank]
    XV = torch.as_tensor(np.ascontiguousarray(xva[vshard])).to(dev)
    YV = torch.as_tensor(yva[vshard].astype(np.int64)).to(dev)
    return ds, X, Y, XV, YV, len(yva)


def _load_graph(cfg: Config, dd: Dist, run: RunDir, ck: dict | None):
    """The graph of a bionic model: the run's own on resume (checked against the checkpoint's
    checksum), else ``--graph``, else :func:`default_graph`."""
    if cfg.model != "bionic":
        return None
    if not dd.main:
        dd.barrier()
    try:
        if ck is not None and run.has_graph():
            return load_run_graph(run, cfg, ck.get("graph_checksum", ""))
        if cfg.graph:
            from connectomics import load_graph

            return load_graph(cfg.graph)
        return default_graph(cfg.cache_root, cfg.graph_seed, cfg.graph_source)
    finally:
        if dd.main:
            dd.barrier()


def _restore(t: Trainer, ck: dict) -> None:
    """Weights, optimiser, schedule, state and RNG streams from a ``last.pt``."""
    t.raw.load_state_dict(ck["model"])
    t.opt.load_state_dict(ck["optimizer"])
    t.state = TrainState.from_dict(ck["state"])
    t.sched.load_state_dict(ck.get("schedule", ck["state"]))   # older checkpoints: in "state"
    rng = ck["rng"]
    t.g_shuffle.set_state(rng["shuffle"])
    t.g_aug.set_state(rng["augment"])
    cpu_states = rng["torch_per_rank"]
    if len(cpu_states) != t.dd.world:
        t.dd.log(f"warning: checkpoint from {len(cpu_states)} rank(s), resuming on {t.dd.world}: "
                 "training noise streams are re-seeded")
        torch.manual_seed(t.cfg.seed * 1000 + 17 + t.dd.rank + 7919 * t.state.step)
    else:
        torch.set_rng_state(cpu_states[t.dd.rank])
        if t.rt.device.type == "cuda" and rng.get("cuda_per_rank"):
            torch.cuda.set_rng_state(rng["cuda_per_rank"][t.dd.rank], t.rt.device)
    t.dd.log(f"resumed {t.run.root} at epoch {t.state.epoch} (step {t.state.step})")


def setup(cfg: Config, rt: Runtime, dd: Dist, resume: bool, refresh: bool = False,
          hooks: dict[str, Callable] | None = None) -> Trainer:
    """Data, graph, model, optimiser, schedule and RNGs of a fresh run, or of ``last.pt``."""
    run = RunDir(cfg.out)
    if cfg.batch_size % dd.world:
        raise ValueError(f"--batch_size {cfg.batch_size} is not divisible by the {dd.world} ranks")
    if resume and not run.last.exists():
        raise FileNotFoundError(f"--resume {run.root}: no last.pt there (nothing finished an epoch yet)")
    if not resume and run.last.exists():
        raise FileExistsError(f"{run.root} already holds a run (last.pt); use --resume {run.root} or another --out")
    ck = load_checkpoint(run.last) if resume else None
    if ck is not None and cfg.threads == 0 and ck.get("threads"):
        rt = replace(rt, threads=int(ck["threads"]))   # same thread count: same floating-point sums
    _configure_torch(rt)
    ds, X, Y, XV, YV, n_val = _load_data(cfg, dd, rt.device, refresh)
    spe = len(Y) // cfg.batch_size
    if spe == 0:
        raise ValueError(f"{len(Y)} training images < --batch_size {cfg.batch_size}")
    graph = _load_graph(cfg, dd, run, ck)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, graph, device=rt.device, spec=ck.get("column_spec") if ck else None)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dd.log(describe(model))
    torch.manual_seed(cfg.seed * 1000 + 17 + dd.rank)   # training noise/dropout stream (per rank)
    opt = make_optimizer(cfg, model)
    t = Trainer(cfg=cfg, rt=rt, dd=dd, run=run, ds=ds, X=X, Y=Y, XV=XV, YV=YV, n_val=n_val,
                steps_per_epoch=spe, graph=graph, raw=model, net=model, eval_net=model, opt=opt,
                sched=LRSchedule(cfg, cfg.epochs * spe, int(round(cfg.warmup_epochs * spe))),
                g_shuffle=torch.Generator().manual_seed(cfg.seed),
                g_aug=torch.Generator(device=rt.device).manual_seed(cfg.seed + 1),
                aug=BatchAugment(cfg.augment_config()), state=TrainState(), hooks=hooks or {})
    if ck is not None:
        _restore(t, ck)
    elif dd.main:
        cfg.save(run.config)
        if graph is not None:
            graph.save(run.graph)
    dd.barrier()
    if dd.world > 1:
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        t.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            broadcast_buffers=has_bn)
    if rt.compile:
        t.net, t.eval_net = torch.compile(t.net), torch.compile(model)
    dd.log(f"device {rt.device}{f' x{dd.world} ranks' if dd.world > 1 else ''}; amp {rt.amp}; "
           f"compile {rt.compile}; channels_last {rt.channels_last}; deterministic {rt.deterministic}; "
           f"threads {rt.threads}; {len(Y)} train / {n_val} {cfg.val_usage} images; "
           f"{spe} steps/epoch of {cfg.batch_size}")
    return t


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimiser step (and plasticity step) on this rank's shard; returns (loss sum, logits)."""
    cfg, dd, step = t.cfg, t.dd, t.state.step
    t.lr = t.sched.lr(step)
    for g in t.opt.param_groups:
        g["lr"] = t.lr
    if "before_step" in t.hooks:
        t.hooks["before_step"](step, t.raw)
    try:
        with t.rt.autocast():
            logits = t.net(x)
    except FloatingPointError as exc:   # the recurrent column's dynamics exploded
        raise TrainingDiverged(_diverged_msg(t.run.root, t.state.epoch, step, str(exc))) from None
    logits = logits.float()
    loss_s = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")
    t.opt.zero_grad(set_to_none=True)
    (loss_s * (dd.world / cfg.batch_size)).backward()   # the global batch's mean gradient
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(t.raw.parameters(), cfg.grad_clip)
    t.opt.step()
    if t.plastic:
        gathered = dd.world > 1 and gather_recorded_activity(t.raw, dd.world)
        try:
            changed = t.raw.plasticity_step()
        except FloatingPointError as exc:
            raise TrainingDiverged(_diverged_msg(t.run.root, t.state.epoch, step,
                                                 f"plasticity step: {exc}")) from None
        if dd.world > 1 and changed and not gathered:
            _broadcast_module(t.raw.column)   # unknown recording: rank 0's update for all
    t.state.step = step + 1
    if "after_step" in t.hooks:
        t.hooks["after_step"](step, t.raw)
    return loss_s.detach(), logits.detach()


def run_epoch(t: Trainer) -> dict | None:
    """One pass over the shuffled training split. Returns the epoch's summed loss and correct
    count (over all ranks) and its time, or None when ``max_steps`` stopped the run."""
    from tqdm.auto import tqdm

    cfg, dd, dev, spe = t.cfg, t.dd, t.rt.device, t.steps_per_epoch
    t.net.train()
    perm = torch.randperm(len(t.Y), generator=t.g_shuffle).to(dev)
    shard = cfg.batch_size // dd.world
    my = slice(dd.rank * shard, (dd.rank + 1) * shard)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.long, device=dev)
    bad_step = torch.full((), -1, dtype=torch.long, device=dev)
    t0 = time.perf_counter()
    bar = tqdm(range(spe), desc=f"epoch {t.state.epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (cfg.progress and dd.main), mininterval=1.0)
    for it in bar:
        if cfg.max_steps and t.state.step >= cfg.max_steps:
            bar.close()
            dd.log(f"stopped at step {t.state.step} (max_steps)")
            return None
        idx = perm[it * cfg.batch_size:(it + 1) * cfg.batch_size]
        x = to_float(t.X[idx[my]])
        if cfg.augment:
            p = t.aug.sample(cfg.batch_size, t.g_aug)          # the global batch's parameters
            x = t.aug.apply(x, BatchAugment.slice(p, my))
        x = normalize(x)
        if t.rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = t.Y[idx[my]]
        step = t.state.step
        ls, logits = train_step(t, x, y)
        loss_sum += ls
        correct += (logits.argmax(1) == y).sum()
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(ls), step, bad_step)
        if (it + 1) % cfg.log_every == 0 or it + 1 == spe:
            if dd.world > 1:
                dist.all_reduce(bad_step, op=dist.ReduceOp.MAX)
            if int(bad_step) >= 0:
                bar.close()
                raise TrainingDiverged(_diverged_msg(t.run.root, t.state.epoch, int(bad_step), "non-finite loss"))
            if dd.main and cfg.progress:
                seen = (it + 1) * shard
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}",
                                acc=f"{100 * int(correct) / seen:.1f}%", lr=f"{t.lr:.2e}")
    bar.close()
    stats = torch.stack([loss_sum, correct.double()])
    if dd.world > 1:
        dist.all_reduce(stats)
    return {"loss_sum": float(stats[0]), "correct": float(stats[1]), "seconds": time.perf_counter() - t0,
            "t0": t0}


def validate_epoch(t: Trainer) -> tuple[dict, float]:
    """(report, summed loss) of the model on the validation usage (all ranks' shards)."""
    try:
        cm, vloss = evaluate_arrays(t.eval_net, t.XV, t.YV, t.cfg.eval_batch_size, t.rt.amp_dtype,
                                    t.rt.channels_last, tta_flip=t.cfg.tta_flip)
    except FloatingPointError as exc:
        raise TrainingDiverged(_diverged_msg(t.run.root, t.state.epoch, t.state.step - 1,
                                             f"validation: {exc}")) from None
    if t.dd.world > 1:
        v = torch.as_tensor(np.concatenate([cm.ravel(), [vloss]]), dtype=torch.float64, device=t.rt.device)
        dist.all_reduce(v)
        cm, vloss = v[:-1].cpu().numpy().round().astype(np.int64).reshape(cm.shape), float(v[-1])
    return report(cm), vloss


def end_epoch(t: Trainer, ep: dict) -> tuple[dict, bool, str]:
    """Validation, model selection, the schedule's plateau rule and the stopping rules after an
    epoch. Returns (metrics row, improved, stop reason or "")."""
    cfg, st = t.cfg, t.state
    seen = t.steps_per_epoch * cfg.batch_size
    rep, vloss = validate_epoch(t)
    row = {"epoch": st.epoch + 1, "step": st.step, "lr": t.lr,
           "train_loss": ep["loss_sum"] / seen, "train_acc": ep["correct"] / seen,
           "val_loss": vloss / max(1, rep["n"]), "val_acc": rep["accuracy"], "val_f1": rep["macro_f1"],
           "epoch_seconds": round(time.perf_counter() - ep["t0"], 3),
           "train_images_per_s": round(seen / ep["seconds"], 1)}
    if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
        raise TrainingDiverged(_diverged_msg(t.run.root, st.epoch, st.step - 1, "non-finite loss"))
    metric = row[cfg.select_metric]
    better = (lambda a, b: a < b) if cfg.select_metric == "val_loss" else (lambda a, b: a > b)
    improved = st.best_metric is None or better(metric, st.best_metric)
    row["is_best"] = bool(improved)
    if improved:
        st.best_metric, st.best_epoch, st.bad_epochs = float(metric), st.epoch + 1, 0
    else:
        st.bad_epochs += 1
    t.sched.end_epoch(metric, better)
    st.history.append(row)
    st.epoch += 1
    stop = ""
    if cfg.patience and st.bad_epochs >= cfg.patience:
        stop = f"early stop: no {cfg.select_metric} improvement for {cfg.patience} epochs"
    if cfg.max_minutes and not stop:
        spent = torch.tensor(sum(h["epoch_seconds"] for h in st.history), dtype=torch.float64,
                             device=t.rt.device)
        if t.dd.world > 1:
            dist.all_reduce(spent, op=dist.ReduceOp.MAX)   # one decision for all ranks
        if float(spent) >= 60 * cfg.max_minutes:
            stop = f"time budget: {float(spent) / 60:.1f} of {cfg.max_minutes:g} minutes used"
    if st.epoch >= cfg.epochs or stop:
        st.finished = True
    return row, improved, stop


def checkpoint(t: Trainer) -> dict[str, Any]:
    """The checkpoint of the current state (collective under DDP: every rank calls it)."""
    dev = t.rt.device
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.zeros(0, dtype=torch.uint8)
    cpu_all, cuda_all = [cpu_state], [cuda_state]
    if t.dd.world > 1:
        cpu_all = [torch.empty_like(cpu_state) for _ in range(t.dd.world)]
        cuda_all = [torch.empty_like(cuda_state) for _ in range(t.dd.world)]
        dist.all_gather_object(cpu_all, cpu_state)
        dist.all_gather_object(cuda_all, cuda_state)
    return {
        "model": t.raw.state_dict(), "optimizer": t.opt.state_dict(), "state": t.state.to_dict(),
        "schedule": t.sched.state_dict(),
        "rng": {"shuffle": t.g_shuffle.get_state(), "augment": t.g_aug.get_state(),
                "torch_per_rank": cpu_all, "cuda_per_rank": cuda_all if dev.type == "cuda" else []},
        "config": t.cfg.to_dict(), "world_size": t.dd.world, "threads": torch.get_num_threads(),
        "column_spec": column_spec_of(t.raw), "graph_checksum": graph_checksum(t.graph),
    }


def save(t: Trainer, row: dict, improved: bool) -> None:
    """After an epoch: ``best.pt`` when improved, ``last.pt``, the metrics files, the log line."""
    ck = checkpoint(t)
    if not t.dd.main:
        return
    if improved:
        save_checkpoint(t.run.best, {"model": ck["model"], "epoch": row["epoch"],
                                     "metric": float(row[t.cfg.select_metric]), "config": ck["config"],
                                     "column_spec": ck["column_spec"],
                                     "graph_checksum": ck["graph_checksum"]})
    save_checkpoint(t.run.last, ck)
    write_metrics(t.run.root, t.state.history, summarize(t))
    t.dd.log(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%  "
             f"| {t.cfg.val_usage} loss {row['val_loss']:.4f}  acc {100 * row['val_acc']:.2f}%  "
             f"F1 {row['val_f1']:.4f}{'  *' if improved else ''}  | lr {t.lr:.2e}  "
             f"{row['train_images_per_s']:.0f} img/s")


def summarize(t: Trainer) -> dict:
    cfg, st = t.cfg, t.state
    best = next((h for h in st.history if h["epoch"] == st.best_epoch), None)
    return {
        "preset": cfg.preset, "model": cfg.model, "seed": cfg.seed,
        "parameters": count_parameters(t.raw),
        "epochs_run": st.epoch, "steps": st.step, "finished": st.finished,
        "best_epoch": st.best_epoch, "select_metric": cfg.select_metric,
        "best_val_acc": best["val_acc"] if best else None,
        "best_val_f1": best["val_f1"] if best else None,
        "device": str(t.rt.device), "world_size": t.dd.world, "amp": t.rt.amp,
        "compile": t.rt.compile, "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


def finish(t: Trainer) -> dict:
    """``final.pt``, the curves and the best checkpoint's reports on every evaluation usage."""
    summary = summarize(t)
    ck = checkpoint(t)   # collective under DDP
    if t.dd.main:
        save_checkpoint(t.run.final, ck)
        _final_reports(t, summary)
        write_metrics(t.run.root, t.state.history, summary)
    t.dd.barrier()
    return summary


def _final_reports(t: Trainer, summary: dict) -> None:
    from .plots import plot_curves
    from .predictions import store_predictions

    cfg, raw, dev = t.cfg, t.raw, t.rt.device
    if cfg.plots:
        plot_curves(t.state.history, t.run.curves,
                    title=f"{cfg.preset} seed {cfg.seed}: best {cfg.val_usage} "
                          f"{100 * (summary['best_val_acc'] or 0):.2f}% (epoch {summary['best_epoch']})")
    best = load_checkpoint(t.run.best)
    final_state = {k: v.clone() for k, v in raw.state_dict().items()}
    raw.load_state_dict(best["model"])
    try:
        for usage in USAGES[1:]:   # PublicTest (selection set) and PrivateTest if present: reports only
            if usage not in t.ds.usages:
                continue
            xi, yi = t.ds.split(usage)
            if cfg.limit_val:   # the same subset the epochs were selected on
                xi, yi = xi[:cfg.limit_val], yi[:cfg.limit_val]
            cm, loss = evaluate_arrays(raw, torch.as_tensor(xi).to(dev),
                                       torch.as_tensor(yi.astype(np.int64)).to(dev),
                                       cfg.eval_batch_size, t.rt.amp_dtype, t.rt.channels_last,
                                       tta_flip=cfg.tta_flip)
            rep = report(cm)
            rep.update(loss=loss / max(1, rep["n"]), usage=usage, checkpoint="best", amp=t.rt.amp,
                       epoch=best["epoch"], data=cfg.data, tta_flip=cfg.tta_flip)
            write_report(rep, t.run.root, usage, plot=cfg.plots)
            summary[f"best_{usage}_acc"] = rep["accuracy"]
            summary[f"best_{usage}_f1"] = rep["macro_f1"]
            print(f"best checkpoint (epoch {best['epoch']}) on {usage}: accuracy "
                  f"{100 * rep['accuracy']:.2f}%, macro F1 {rep['macro_f1']:.4f}")
    finally:
        raw.load_state_dict(final_state)
    summary.update(store_predictions(t.run.root, raw, best["model"], t.ds, cfg, t.rt, plot=cfg.plots,
                                     best_epoch=best["epoch"], final_epoch=t.state.epoch))


def loop(t: Trainer) -> dict:
    """Epochs until done, stopped or diverged; then :func:`finish`."""
    cfg, st = t.cfg, t.state
    if st.finished:
        t.dd.log("that run already finished; nothing to do")
        return {"finished": True, **summarize(t)}
    while st.epoch < cfg.epochs:
        ep = run_epoch(t)
        if ep is None:
            return {"stopped": True, "step": st.step, "epoch": st.epoch}
        row, improved, stop = end_epoch(t, ep)
        save(t, row, improved)
        t.dd.barrier()
        if stop:
            t.dd.log(stop)
            break
        if cfg.stop_after_epoch and st.epoch == cfg.stop_after_epoch and not st.finished:
            t.dd.log(f"stopped after epoch {st.epoch} (stop_after_epoch)")
            return {"stopped": True, "step": st.step, "epoch": st.epoch}
    return finish(t)


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def train(cfg: Config, resume: bool = False, hooks: dict[str, Callable] | None = None,
          refresh: bool = False) -> dict:
    """Train according to ``cfg`` (``resume``: continue ``cfg.out/last.pt``). Returns the summary.

    ``refresh``: decode the FER-2013 source again and rewrite its cache. Rank 0 holds the run
    folder's lock (:meth:`pipelines.run_dir.RunDir.lock`) for the whole run. ``hooks`` (tests,
    tools): ``before_step(step, model)`` and ``after_step(step, model)`` are called around every
    optimiser step (``step`` counts from 0 over the whole run; ``model`` is the unwrapped module)."""
    validate(cfg)
    dd = Dist.from_env()
    rt = runtime_of(cfg, local_rank=dd.local_rank, local_processes=dd.local_world)
    own_pg = False
    if dd.world > 1 and not dist.is_initialized():
        if rt.device.type == "cuda":
            torch.cuda.set_device(rt.device)
        dist.init_process_group("nccl" if rt.device.type == "cuda" else "gloo")
        own_pg = True
    # process-wide settings the run changes (threads, deterministic mode) are restored afterwards
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with RunDir(cfg.out).lock() if dd.main else contextlib.nullcontext(), dynamo_fallback():
            return loop(setup(cfg, rt, dd, resume, refresh, hooks))
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        if own_pg:
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resume", metavar="RUN_DIR", default=None,
                    help="continue the run in RUN_DIR from its last.pt (its config.json; options "
                         "given here override it)")
    ap.add_argument("--refresh", action="store_true",
                    help="decode the FER-2013 source again and rewrite its cache")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    add_config_arguments(ap)
    ns = ap.parse_args(argv)
    return run_cli("train", lambda: _main(ns), debug=ns.debug)


def _main(ns: argparse.Namespace) -> int:
    if ns.resume:
        run = RunDir(ns.resume)
        if not run.config.is_file():
            raise FileNotFoundError(f"--resume {ns.resume}: no run there ({run.config} is missing)")
        base = Config.load(run.config)
        base = replace(base, stop_after_epoch=0, max_steps=0, out=str(ns.resume))
        cfg, explicit = config_from_args(ns, base=base)
        changed = {k: v for k, v in explicit.items() if k != "out"}
        if changed and int(os.environ.get("RANK", "0")) == 0:
            print(f"resume: overriding {changed} (the result will differ from an uninterrupted run)")
    else:
        cfg, _ = config_from_args(ns)
    summary = train(cfg, resume=bool(ns.resume), refresh=ns.refresh)
    if summary.get("finished") and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "parameters"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
