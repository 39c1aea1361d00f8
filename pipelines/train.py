"""Train BioNIC (or the plain CNN) on FER-2013: one readable loop, GPU first, CPU fallback.

    python -m pipelines.train --data ../shared/data/fer2013/fer2013.csv.gz   # or an image-folder root
    python -m pipelines.train --preset paper --seed 1 --out runs/paper-s1
    python -m pipelines.train --resume runs/paper-s1            # continues where it stopped
    torchrun --nproc_per_node 2 -m pipelines.train ...          # data-parallel (gloo on CPU, NCCL on GPU)

Every field of :class:`pipelines.config.Config` is an option (``--lr 1e-3``, ``--hebbian_rate 0``,
``--lateral_inhibition false`` ...); ``--preset paper|paper400|cnn|cnn400|wide`` sets a group first.

* Data: the whole split lives on the device as uint8; each step indexes a batch, augments it on
  the device (:mod:`pipelines.augment`, one seeded generator) and normalises it -- no per-sample
  Python. Train on ``Training``, select on ``PublicTest`` (early stopping, ``best.pt``);
  ``PrivateTest``, when the data has it, is only evaluated at the end.
* Each optimiser step is followed by ``model.plasticity_step()`` (Hebbian + homeostatic update of
  the column; a no-op when off).
* A run directory holds ``config.json``, ``graph/``, ``metrics.csv``/``metrics.json``,
  ``curves.png``, ``eval_<usage>.json`` + ``confusion_<usage>.png``, ``last.pt`` (written
  atomically after every epoch; what ``--resume`` reads), ``best.pt`` and ``final.pt``.
  Checkpoints hold only tensors and plain types (``torch.load(..., weights_only=True)``):
  weights, optimiser, schedule state, epoch/step, best metric, history and every RNG state, so a
  resumed run ends with exactly the weights of an uninterrupted one (on CPU, same thread count).
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
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .augment import BatchAugment, normalize, to_float
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import UserError, run_cli
from .run_dir import RunDir
from .config import Config, add_config_arguments, config_from_args, validate
from .evaluate import evaluate_arrays, report, write_report
from .fer2013 import USAGES, _atomic_write, load_fer2013
from .models import build_model, count_parameters, describe
from .runtime import Runtime, dynamo_fallback, runtime_of


class TrainingDiverged(UserError):
    """The loss (or a plasticity update) became NaN/inf; the last good checkpoint is intact."""


def default_graph(cache_root: str | Path = "data_cache", seed: int = 0):
    """The embedded default connectome: the surrogate column built (or loaded from the cache) by
    ``connectomics.build.build_default_graph``."""
    try:
        from connectomics.build import build_default_graph
    except ImportError as exc:
        raise RuntimeError(f"no default graph available ({exc}); build one with "
                           "`python -m pipelines.build_graph` and pass --graph DIR") from None
    return build_default_graph(cache_root=cache_root, seed=seed)


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def resolve_flags(rt: Runtime) -> dict[str, Any]:
    return {"amp_dtype": rt.amp_dtype, "compile": rt.compile, "channels_last": rt.channels_last,
            "deterministic": rt.deterministic, "threads": rt.threads}


def lr_factor(cfg: Config, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based) for the step-wise schedules
    (``plateau`` multiplies this warmup-only factor by its own scale)."""
    if cfg.lr_schedule == "onecycle":
        w = warmup_steps or max(1, int(0.3 * total_steps))
        if step < w:   # cosine warm-up from lr/25
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * (step + 1) / w))
        t = min(1.0, (step - w) / max(1, total_steps - w))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cfg.lr_schedule == "cosine":
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0  # constant / plateau


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices/kernels only (not biases, norms, thresholds)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def write_metrics(out: Path, history: list[dict], summary: dict) -> None:
    if history:
        keys = list(history[0].keys())
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(history)
        _atomic_write(out / "metrics.csv", lambda f: f.write(buf.getvalue().encode()))
    _atomic_write(out / "metrics.json",
                  lambda f: f.write(json.dumps({"summary": summary, "epochs": history}, indent=2).encode()))


def _is_plastic(cfg: Config) -> bool:
    return cfg.model == "bionic" and (cfg.hebbian_rate > 0 or cfg.homeostasis)


def gather_recorded_activity(model: nn.Module, world: int) -> bool:
    """Data parallel: replace each column layer's recorded activity (its shard of the batch) by the
    whole batch's, concatenated in rank order. Returns False if the column records nothing we know."""
    col = getattr(model, "column", None)
    layers = getattr(col, "layers", None)
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


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def train(cfg: Config, resume: bool = False, hooks: dict[str, Callable] | None = None,
          refresh: bool = False) -> dict:
    """Train according to ``cfg`` (``resume``: continue ``cfg.out/last.pt``). Returns the summary.
    ``refresh``: decode the FER-2013 source again and rewrite its cache. Rank 0 holds the run
    folder's lock (:meth:`pipelines.run_dir.RunDir.lock`) for the whole run.

    ``hooks`` (tests, tools): ``before_step(step, model)`` and ``after_step(step, model)`` are
    called around every optimiser step (``step`` counts from 0 over the whole run; ``model`` is
    the unwrapped module)."""
    hooks = hooks or {}
    validate(cfg)
    # -- distributed --------------------------------------------------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    rt = runtime_of(cfg, local_rank=local_rank, local_processes=local_world)
    dev = rt.device
    own_pg = False
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        own_pg = True
    main_rank = rank == 0
    # process-wide settings _train changes (threads, deterministic mode) are restored afterwards
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with RunDir(cfg.out).lock() if main_rank else contextlib.nullcontext():
            with dynamo_fallback():   # a compiler error falls back to eager (scoped to the run)
                return _train(cfg, resume, hooks, world, rank, rt, main_rank, refresh)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        if own_pg:
            dist.destroy_process_group()


def _train(cfg: Config, resume: bool, hooks: dict, world: int, rank: int, rt: Runtime,
           main_rank: bool, refresh: bool = False) -> dict:
    dev = rt.device
    def log(msg: str) -> None:
        if main_rank:
            print(msg, flush=True)

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    flags = resolve_flags(rt)
    torch.set_num_threads(rt.threads)
    if flags["deterministic"]:
        if dev.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    out = Path(cfg.out)
    ckpt_path = out / "last.pt"
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume {out}: no last.pt there (nothing finished an epoch yet)")
    if not resume and ckpt_path.exists():
        raise FileExistsError(f"{out} already holds a run (last.pt); use --resume {out} or another --out")

    # -- data (rank 0 decodes/caches first) ---------------------------------------------------
    t0 = time.perf_counter()
    if not main_rank:
        barrier()
    ds = load_fer2013(cfg.data, cfg.cache_root, refresh=refresh and main_rank)
    if main_rank:
        barrier()
    log(f"data: {len(ds)} images from {cfg.data} ({'cache' if ds.meta.get('from_cache') else 'decoded'}, "
        f"{time.perf_counter() - t0:.2f} s); usages {', '.join(ds.usages)}")
    xtr, ytr = ds.split(cfg.train_usage)
    xva, yva = ds.split(cfg.val_usage)
    if cfg.limit_train:
        xtr, ytr = xtr[:cfg.limit_train], ytr[:cfg.limit_train]
    if cfg.limit_val:
        xva, yva = xva[:cfg.limit_val], yva[:cfg.limit_val]
    X = torch.as_tensor(np.ascontiguousarray(xtr)).unsqueeze(1).to(dev)   # (N, 1, 48, 48) uint8
    Y = torch.as_tensor(ytr.astype(np.int64)).to(dev)
    n_train = len(Y)
    spe = n_train // cfg.batch_size
    if spe == 0:
        raise ValueError(f"{n_train} training images < batch_size {cfg.batch_size}")
    vshard = np.array_split(np.arange(len(yva)), world)[rank]
    XV = torch.as_tensor(np.ascontiguousarray(xva[vshard])).to(dev)
    YV = torch.as_tensor(yva[vshard].astype(np.int64)).to(dev)

    # -- graph + model --------------------------------------------------------------------------
    graph = None
    if cfg.model == "bionic":
        if not main_rank:
            barrier()
        if resume and (out / "graph" / "nodes.parquet").exists():
            from connectomics import load_graph
            graph = load_graph(out / "graph")
        elif cfg.graph:
            from connectomics import load_graph
            graph = load_graph(cfg.graph)
        else:
            graph = default_graph(cfg.cache_root, cfg.graph_seed)
        if main_rank:
            barrier()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, graph, device=dev)
    if flags["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    log(describe(model))
    torch.manual_seed(cfg.seed * 1000 + 17 + rank)   # training noise/dropout stream (per rank)
    try:   # fused AdamW (CUDA and CPU): one kernel per parameter group instead of many small ops
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                betas=(cfg.beta1, cfg.beta2), fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                betas=(cfg.beta1, cfg.beta2))
    total_steps = cfg.epochs * spe
    warmup_steps = int(round(cfg.warmup_epochs * spe))
    g_shuffle = torch.Generator().manual_seed(cfg.seed)
    g_aug = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    aug = BatchAugment(cfg.augment_config())

    # -- state (fresh or resumed) -------------------------------------------------------------
    st: dict[str, Any] = {"epoch": 0, "step": 0, "best_metric": None, "best_epoch": -1,
                          "bad_epochs": 0, "plateau_best": None, "plateau_bad": 0,
                          "lr_scale": 1.0, "history": [], "finished": False}
    if resume:
        ck = load_checkpoint(ckpt_path)
        if cfg.threads == 0 and ck.get("threads"):   # same thread count: same floating-point sums
            torch.set_num_threads(int(ck["threads"]))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        for k in st:
            st[k] = ck["state"][k]
        rng = ck["rng"]
        g_shuffle.set_state(rng["shuffle"])
        g_aug.set_state(rng["augment"])
        cpu_states = rng["torch_per_rank"]
        if len(cpu_states) != world:
            log(f"warning: checkpoint from {len(cpu_states)} rank(s), resuming on {world}: "
                "training noise streams are re-seeded")
            torch.manual_seed(cfg.seed * 1000 + 17 + rank + 7919 * st["step"])
        else:
            torch.set_rng_state(cpu_states[rank])
            if dev.type == "cuda" and rng.get("cuda_per_rank"):
                torch.cuda.set_rng_state(rng["cuda_per_rank"][rank], dev)
        log(f"resumed {out} at epoch {st['epoch']} (step {st['step']})")
        if st["finished"]:
            log("that run already finished; nothing to do")
            return {"finished": True, **_summary(cfg, st, model, world, dev, flags)}
    elif main_rank:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        if graph is not None:
            graph.save(out / "graph")
    barrier()

    # -- wrap: DDP, compile -------------------------------------------------------------------
    raw = model
    net: nn.Module = model
    if world > 1:
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=has_bn)
    eval_net: nn.Module = raw
    if flags["compile"]:
        net = torch.compile(net)
        eval_net = torch.compile(raw)
    plastic = _is_plastic(cfg)
    amp = flags["amp_dtype"]
    shard = cfg.batch_size // world
    my = slice(rank * shard, (rank + 1) * shard)

    def checkpoint_obj() -> dict:
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.zeros(0, dtype=torch.uint8)
        if world > 1:
            cpu_all = [torch.empty_like(cpu_state) for _ in range(world)]
            cuda_all = [torch.empty_like(cuda_state) for _ in range(world)]
            dist.all_gather_object(cpu_all, cpu_state)
            dist.all_gather_object(cuda_all, cuda_state)
        else:
            cpu_all, cuda_all = [cpu_state], [cuda_state]
        return {
            "model": raw.state_dict(), "optimizer": opt.state_dict(), "state": dict(st),
            "rng": {"shuffle": g_shuffle.get_state(), "augment": g_aug.get_state(),
                    "torch_per_rank": cpu_all, "cuda_per_rank": cuda_all if dev.type == "cuda" else []},
            "config": cfg.to_dict(), "world_size": world, "threads": torch.get_num_threads(),
        }

    log(f"device {dev}{f' x{world} ranks' if world > 1 else ''}; amp {'bf16' if amp else 'off'}; compile {flags['compile']}; "
        f"channels_last {flags['channels_last']}; deterministic {flags['deterministic']}; "
        f"{n_train} train / {len(yva)} {cfg.val_usage} images; {spe} steps/epoch of {cfg.batch_size}")

    # -- loop -----------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    stop_reason = ""
    while st["epoch"] < cfg.epochs:
        epoch = st["epoch"]
        net.train()
        perm = torch.randperm(n_train, generator=g_shuffle).to(dev)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.long, device=dev)
        bad_step = torch.full((), -1, dtype=torch.long, device=dev)
        t_ep = time.perf_counter()
        bar = tqdm(range(spe), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and main_rank), mininterval=1.0)
        for it in bar:
            step = st["step"]
            if cfg.max_steps and step >= cfg.max_steps:
                log(f"stopped at step {step} (max_steps)")
                return {"stopped": True, "step": step, "epoch": epoch}
            idx = perm[it * cfg.batch_size:(it + 1) * cfg.batch_size]
            x = to_float(X[idx[my]])
            if cfg.augment:
                p = aug.sample(cfg.batch_size, g_aug)          # the global batch's parameters
                x = aug.apply(x, BatchAugment.slice(p, my))
            x = normalize(x)
            if flags["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            y = Y[idx[my]]
            lr = cfg.lr * lr_factor(cfg, step, total_steps, warmup_steps) * st["lr_scale"]
            for g in opt.param_groups:
                g["lr"] = lr
            if "before_step" in hooks:
                hooks["before_step"](step, raw)
            with torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                logits = net(x)
            logits = logits.float()
            loss_s = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing, reduction="sum")
            loss = loss_s * (world / cfg.batch_size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            opt.step()
            if plastic:
                gathered = world > 1 and gather_recorded_activity(raw, world)
                try:
                    changed = raw.plasticity_step()
                except FloatingPointError as exc:
                    raise TrainingDiverged(_diverged_msg(out, epoch, step, f"plasticity step: {exc}")) from None
                if world > 1 and changed and not gathered:
                    _broadcast_module(raw.column)   # unknown recording: rank 0's update for all
            ls = loss_s.detach()
            loss_sum += ls
            correct += (logits.detach().argmax(1) == y).sum()
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(ls), step, bad_step)
            st["step"] = step + 1
            if "after_step" in hooks:
                hooks["after_step"](step, raw)
            if (it + 1) % cfg.log_every == 0 or it + 1 == spe:
                if world > 1:
                    dist.all_reduce(bad_step, op=dist.ReduceOp.MAX)
                if int(bad_step) >= 0:
                    raise TrainingDiverged(_diverged_msg(out, epoch, int(bad_step), "non-finite loss"))
                if main_rank and cfg.progress:
                    seen = (it + 1) * shard
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}",
                                    acc=f"{100 * int(correct) / seen:.1f}%", lr=f"{lr:.2e}")
        bar.close()
        # -- end of epoch: metrics, selection, schedule, checkpoints ---------------------------
        stats = torch.stack([loss_sum, correct.double()])
        if world > 1:
            dist.all_reduce(stats)
        seen = spe * cfg.batch_size
        train_s = time.perf_counter() - t_ep
        cm, vloss = evaluate_arrays(eval_net, XV, YV, cfg.eval_batch_size, amp, flags["channels_last"],
                                    tta_flip=cfg.tta_flip)
        if world > 1:
            t = torch.as_tensor(np.concatenate([cm.ravel(), [vloss]]), dtype=torch.float64, device=dev)
            dist.all_reduce(t)
            cm, vloss = t[:-1].cpu().numpy().round().astype(np.int64).reshape(cm.shape), float(t[-1])
        rep = report(cm)
        row = {"epoch": epoch + 1, "step": st["step"], "lr": lr,
               "train_loss": float(stats[0]) / seen, "train_acc": float(stats[1]) / seen,
               "val_loss": vloss / max(1, rep["n"]), "val_acc": rep["accuracy"], "val_f1": rep["macro_f1"],
               "epoch_seconds": round(time.perf_counter() - t_ep, 3),
               "train_images_per_s": round(seen / train_s, 1)}
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            raise TrainingDiverged(_diverged_msg(out, epoch, st["step"] - 1, "non-finite loss"))
        metric = row[cfg.select_metric]
        better = (lambda a, b: a < b) if cfg.select_metric == "val_loss" else (lambda a, b: a > b)
        improved = st["best_metric"] is None or better(metric, st["best_metric"])
        row["is_best"] = bool(improved)
        if improved:
            st["best_metric"], st["best_epoch"], st["bad_epochs"] = float(metric), epoch + 1, 0
        else:
            st["bad_epochs"] += 1
        if cfg.lr_schedule == "plateau":
            if st["plateau_best"] is None or better(metric, st["plateau_best"]):
                st["plateau_best"], st["plateau_bad"] = float(metric), 0
            else:
                st["plateau_bad"] += 1
                if st["plateau_bad"] > cfg.plateau_patience:
                    st["lr_scale"] = max(st["lr_scale"] * cfg.plateau_factor, cfg.min_lr_ratio)
                    st["plateau_bad"] = 0
        st["history"].append(row)
        st["epoch"] = epoch + 1
        if cfg.patience and st["bad_epochs"] >= cfg.patience:
            stop_reason = f"early stop: no {cfg.select_metric} improvement for {cfg.patience} epochs"
        if cfg.max_minutes and not stop_reason:
            spent = torch.tensor(sum(h["epoch_seconds"] for h in st["history"]), dtype=torch.float64, device=dev)
            if world > 1:
                dist.all_reduce(spent, op=dist.ReduceOp.MAX)   # one decision for all ranks
            if float(spent) >= 60 * cfg.max_minutes:
                stop_reason = f"time budget: {float(spent) / 60:.1f} of {cfg.max_minutes:g} minutes used"
        if st["epoch"] >= cfg.epochs or stop_reason:
            st["finished"] = True
        ck = checkpoint_obj()
        if main_rank:
            if improved:
                save_checkpoint(out / "best.pt", {"model": ck["model"], "epoch": epoch + 1,
                                                  "metric": float(metric), "config": ck["config"]})
            save_checkpoint(ckpt_path, ck)
            write_metrics(out, st["history"], _summary(cfg, st, raw, world, dev, flags))
            log(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  acc {100 * row['train_acc']:.2f}%  "
                f"| {cfg.val_usage} loss {row['val_loss']:.4f}  acc {100 * row['val_acc']:.2f}%  "
                f"F1 {row['val_f1']:.4f}{'  *' if improved else ''}  | lr {lr:.2e}  "
                f"{row['train_images_per_s']:.0f} img/s")
        barrier()
        if stop_reason:
            log(stop_reason)
            break
        if cfg.stop_after_epoch and st["epoch"] == cfg.stop_after_epoch and not st["finished"]:
            log(f"stopped after epoch {st['epoch']} (stop_after_epoch)")
            return {"stopped": True, "step": st["step"], "epoch": st["epoch"]}

    # -- finish: final checkpoint, curves, reports ----------------------------------------------
    summary = _summary(cfg, st, raw, world, dev, flags)
    ck = checkpoint_obj()   # collective under DDP: every rank takes part
    if main_rank:
        save_checkpoint(out / "final.pt", ck)
        _finish_reports(cfg, out, ds, raw, dev, amp, flags, summary, st["history"])
        write_metrics(out, st["history"], summary)
    barrier()
    return summary


def _diverged_msg(out: Path, epoch: int, step: int, what: str) -> str:
    last = out / "last.pt"
    where = f"{last} (end of epoch {epoch})" if last.exists() else "none (no epoch finished)"
    return (f"training diverged at epoch {epoch + 1}, step {step}: {what}. Stopped; the last good "
            f"checkpoint is {where}. Lower --lr / --hebbian_rate or check the data.")


def _summary(cfg: Config, st: dict, model: nn.Module, world: int, dev: torch.device, flags: dict) -> dict:
    best = next((h for h in st["history"] if h["epoch"] == st["best_epoch"]), None)
    return {
        "preset": cfg.preset, "model": cfg.model, "seed": cfg.seed,
        "parameters": count_parameters(model),
        "epochs_run": st["epoch"], "steps": st["step"], "finished": st["finished"],
        "best_epoch": st["best_epoch"], "select_metric": cfg.select_metric,
        "best_val_acc": best["val_acc"] if best else None,
        "best_val_f1": best["val_f1"] if best else None,
        "device": str(dev), "world_size": world, "amp": "bf16" if flags["amp_dtype"] else "off",
        "compile": flags["compile"], "torch": torch.__version__,
    }


def _finish_reports(cfg: Config, out: Path, ds, raw: nn.Module, dev: torch.device, amp, flags: dict,
                    summary: dict, history: list[dict]) -> None:
    from .plots import plot_curves

    if cfg.plots:
        plot_curves(history, out / "curves.png",
                    title=f"{cfg.preset} seed {cfg.seed}: best {cfg.val_usage} "
                          f"{100 * (summary['best_val_acc'] or 0):.2f}% (epoch {summary['best_epoch']})")
    best = load_checkpoint(out / "best.pt")
    final_state = {k: v.clone() for k, v in raw.state_dict().items()}
    raw.load_state_dict(best["model"])
    try:
        for usage in USAGES[1:]:   # PublicTest (selection set) and PrivateTest if present: reports only
            if usage not in ds.usages:
                continue
            xi, yi = ds.split(usage)
            if cfg.limit_val:   # the same subset the epochs were selected on
                xi, yi = xi[:cfg.limit_val], yi[:cfg.limit_val]
            cm, loss = evaluate_arrays(raw, torch.as_tensor(xi).to(dev),
                                       torch.as_tensor(yi.astype(np.int64)).to(dev),
                                       cfg.eval_batch_size, amp, flags["channels_last"],
                                       tta_flip=cfg.tta_flip)
            rep = report(cm)
            rep.update(loss=loss / max(1, rep["n"]), usage=usage, checkpoint="best",
                       epoch=best["epoch"], data=cfg.data, tta_flip=cfg.tta_flip)
            write_report(rep, out, usage, plot=cfg.plots)
            summary[f"best_{usage}_acc"] = rep["accuracy"]
            summary[f"best_{usage}_f1"] = rep["macro_f1"]
            print(f"best checkpoint (epoch {best['epoch']}) on {usage}: accuracy "
                  f"{100 * rep['accuracy']:.2f}%, macro F1 {rep['macro_f1']:.4f}")
    finally:
        raw.load_state_dict(final_state)


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
