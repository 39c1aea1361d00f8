"""The optimiser of a training run and its learning-rate schedule.

:func:`make_optimizer` is AdamW with weight decay on matrices and kernels only
(:func:`param_groups`); :class:`LRSchedule` gives the learning rate of every optimiser step and
keeps the plateau rule's state, which checkpoints save as ``schedule``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from .config import Config


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
