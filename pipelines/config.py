"""The run configuration: one flat dataclass, presets, and a CLI generated from its fields.

Every field is a command-line option ``--<field> VALUE`` (booleans accept true/false/1/0/yes/no/
on/off); ``--preset NAME`` applies a preset first, explicit options override it. The resolved
config is saved as ``config.json`` in the run directory and restored by ``--resume``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .augment import AugmentConfig


@dataclass
class Config:
    # -- data -------------------------------------------------------------------------------
    data: str = "data_cache/fer2013/fer2013.csv"   # Kaggle CSV (.csv/.csv.gz) or image-folder root
    cache_root: str = "data_cache"
    train_usage: str = "Training"
    val_usage: str = "PublicTest"        # early stopping / best checkpoint (never PrivateTest)
    limit_train: int = 0                 # use only the first N training images (0 = all; smoke tests)
    limit_val: int = 0
    # -- graph / column ---------------------------------------------------------------------
    graph: str = ""                      # graph folder (pipelines.build_graph); "" = default_graph()
    graph_seed: int = 0                  # seed of the embedded default (surrogate) graph
    intra_layer: bool = True             # within-layer connections (masked)
    dale: bool = True                    # Dale's law (sign of the presynaptic class)
    graded_inhibition: bool = True
    inhibition_strength: float = 0.5
    layer_norm: bool = True
    noise_std: float = 0.1               # Gaussian synaptic noise (training only)
    hebbian_rate: float = 1e-4           # Oja Hebbian rate (0 = off), applied by plasticity_step()
    homeostasis: bool = True
    homeostatic_target: float = 0.1
    homeostatic_rate: float = 0.01
    mask: str = "connectome"             # connectome | random | degree_shuffle | label_shuffle | dense
    column_backend: str = "dense"        # dense | sparse | auto (dense: portable checkpoints)
    column_seed: int = 0
    # -- model ------------------------------------------------------------------------------
    model: str = "bionic"                # bionic (conv front end -> column -> linear) | cnn (plain)
    front: str = "paper"                 # paper (8 -> 16 filters) | wide (VGG-style blocks)
    conv_layers: bool = True             # off: the column reads the (pooled) pixels directly
    conv1_channels: int = 8
    conv2_channels: int = 16
    kernel_size: int = 3
    wide_channels: str = "32,64,128"     # channels of the wide front's three blocks
    feat_size: int = 15                  # front-end output grid (feat_size x feat_size) via pooling
    lateral_inhibition: bool = True      # divisive normalisation after the first conv
    lateral_size: int = 5                # channels in its window
    attention: bool = True               # CBAM-style channel + spatial attention after conv 2
    dropout: float = 0.0                 # before the column (and before the cnn head)
    cnn_hidden: int = 0                  # cnn model: hidden units (0 = match the bionic param count)
    # -- optimisation -----------------------------------------------------------------------
    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0               # 0 = off
    label_smoothing: float = 0.1
    lr_schedule: str = "cosine"          # cosine (linear warmup) | onecycle | plateau | constant
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.01           # final LR / peak LR (cosine, onecycle)
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    patience: int = 20                   # early stopping on val_usage (0 = off)
    max_minutes: float = 0.0             # stop after the epoch that uses up this training time (0 = off)
    select_metric: str = "val_acc"       # val_acc | val_f1 | val_loss
    tta_flip: bool = False               # predict with the mean of each image's and its mirror's probabilities
    # -- augmentation -----------------------------------------------------------------------
    augment: bool = True
    aug_flip: float = 0.5
    aug_rotate: float = 10.0
    aug_scale: float = 0.1
    aug_translate: float = 0.1
    aug_brightness: float = 0.2
    aug_contrast: float = 0.2
    aug_erase: float = 0.25
    # -- system -----------------------------------------------------------------------------
    seed: int = 1
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: str = "auto"                    # auto (bf16 on CUDA) | bf16 | off
    compile: str = "auto"                # auto (on for CUDA) | on | off
    channels_last: str = "auto"          # auto (on for CPU and CUDA convs) | on | off
    deterministic: str = "auto"          # auto (on for CPU) | on | off
    threads: int = 0                     # torch CPU threads (0 = auto: the free cores, see pipelines.runtime)
    eval_batch_size: int = 1024
    out: str = ""                        # run directory ("" = runs/<preset>-s<seed>)
    preset: str = "default"
    log_every: int = 50                  # steps between progress-bar updates / finiteness checks
    progress: bool = True
    plots: bool = True                   # curves.png / confusion_*.png at the end (JSON always)
    stop_after_epoch: int = 0            # test hook: stop (as if killed) after this epoch
    max_steps: int = 0                   # test hook: stop after this many optimizer steps in total

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(flip=self.aug_flip, rotate_deg=self.aug_rotate, scale=self.aug_scale,
                             translate=self.aug_translate, brightness=self.aug_brightness,
                             contrast=self.aug_contrast, erase_p=self.aug_erase)

    def column_overrides(self) -> dict[str, Any]:
        """The :class:`graphnet.ColumnSpec` fields this config sets."""
        return dict(intra_layer=self.intra_layer, dale=self.dale,
                    graded_inhibition=self.graded_inhibition,
                    inhibition_strength=self.inhibition_strength, layer_norm=self.layer_norm,
                    noise_std=self.noise_std, hebbian_rate=self.hebbian_rate,
                    homeostasis=self.homeostasis, homeostatic_target=self.homeostatic_target,
                    homeostatic_rate=self.homeostatic_rate, mask=self.mask,
                    backend=self.column_backend, seed=self.column_seed)

    def column_spec(self):
        """The :class:`graphnet.ColumnSpec` this config describes (the paper's column with the
        config's switches)."""
        from graphnet import ColumnSpec

        return ColumnSpec.bionic(**self.column_overrides())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}")
        return cls(**d)

    def save(self, path) -> None:
        from .fer2013 import _atomic_write

        _atomic_write(path, lambda f: f.write(json.dumps(self.to_dict(), indent=2).encode()))

    @classmethod
    def load(cls, path) -> "Config":
        """The config saved at ``path``; errors name the file."""
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a valid config.json ({exc})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a valid config.json (not a JSON object)")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None


#: The training recipe that fits the issue's budget, 60 minutes per seed on 2 CPU cores (measured:
#: about 87 s per epoch with three runs sharing the two cores, see docs/results.md): batch 128,
#: one-cycle LR peaking at 3e-3 over 36 epochs, lighter regularisation than a 400-epoch run needs
#: (synaptic noise 0.05, rotation 8 degrees, erasing p 0.1, weight decay 5e-5), no early stopping (the
#: best PublicTest epoch is still kept as ``best.pt``), and a 56-minute guard.
CPU_RECIPE: dict[str, Any] = dict(batch_size=128, epochs=36, lr=3e-3, lr_schedule="onecycle",
                                  warmup_epochs=2, weight_decay=5e-5, patience=0, noise_std=0.05,
                                  aug_rotate=8.0, aug_erase=0.1, max_minutes=56.0)

#: The paper's stated training recipe (Adam with weight decay, batch 32, up to 400 epochs, early
#: stopping, an LR scheduler -- its kind unknown; plateau here), for machines that can afford it.
PAPER_RECIPE: dict[str, Any] = dict(batch_size=32, epochs=400, lr=1e-3, weight_decay=1e-4,
                                    lr_schedule="plateau", plateau_patience=8, plateau_factor=0.5,
                                    patience=40, noise_std=0.1, max_minutes=0.0)

#: The paper's model: 8 -> 16 filters (5x5 kernels: the paper does not give kernel sizes, and 5x5
#: beat 3x3 by 3 points at equal budget here), lateral inhibition, CBAM attention, the compiled
#: column with every biological feature on (the synaptic-noise sigma is part of each recipe).
PAPER_MODEL: dict[str, Any] = dict(model="bionic", front="paper", conv1_channels=8, conv2_channels=16,
                                   kernel_size=5, feat_size=15, lateral_inhibition=True,
                                   attention=True, intra_layer=True, dale=True,
                                   graded_inhibition=True, layer_norm=True,
                                   hebbian_rate=1e-4, homeostasis=True, mask="connectome",
                                   augment=True, label_smoothing=0.1, dropout=0.0)

#: The plain CNN of the paper's comparison: the same conv front end without lateral inhibition or
#: attention, no column, none of the biological features (no synaptic noise: the presets set
#: ``noise_std=0`` after the recipe), dropout 0.3 in its MLP head.
CNN_MODEL: dict[str, Any] = dict(model="cnn", front="paper", conv1_channels=8, conv2_channels=16,
                                 kernel_size=5, feat_size=15, lateral_inhibition=False,
                                 attention=False, augment=True, label_smoothing=0.1,
                                 hebbian_rate=0.0, homeostasis=False, dropout=0.3)

#: Presets: field overrides of :class:`Config`. ``paper`` is the paper's model trained on the CPU
#: recipe; ``paper400`` the same model on the paper's stated recipe; ``cnn`` / ``cnn400`` the plain
#: CNN on each recipe (so a comparison changes the model only); ``wide`` a wider conv front end
#: (three VGG-style blocks with BatchNorm) feeding the same column.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {**PAPER_MODEL, **CPU_RECIPE},
    "paper400": {**PAPER_MODEL, **PAPER_RECIPE},
    "cnn": {**CNN_MODEL, **CPU_RECIPE, "noise_std": 0.0},
    "cnn400": {**CNN_MODEL, **PAPER_RECIPE, "noise_std": 0.0},
    "wide": dict(model="bionic", front="wide", wide_channels="32,64,128", feat_size=6,
                 lateral_inhibition=True, attention=True, dropout=0.3, batch_size=128,
                 epochs=120, lr=2e-3, weight_decay=5e-4, lr_schedule="onecycle",
                 warmup_epochs=6, patience=30, label_smoothing=0.1),
}


def parse_bool(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on", "y", "t"):
        return True
    if v in ("0", "false", "no", "off", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {s!r}")


def _field_comments() -> dict[str, str]:
    """The ``# comment`` after each field in this file's source (for ``--help``)."""
    import inspect
    import re

    try:
        src = inspect.getsource(Config)
    except (OSError, TypeError):  # pragma: no cover
        return {}
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\s+(\w+): \w+ = [^#\n]*#(.*)$", src, flags=re.M)}


def add_config_arguments(ap: argparse.ArgumentParser) -> None:
    """One ``--<field>`` option per :class:`Config` field (default: unset)."""
    notes = _field_comments()
    defaults = Config()
    for f in fields(Config):
        tname = f.type if isinstance(f.type, str) else f.type.__name__
        typ = {"bool": parse_bool, "int": int, "float": float, "str": str}[tname]
        note = notes.get(f.name, "")
        ap.add_argument(f"--{f.name}", type=typ, default=None, metavar=tname.upper(),
                        help=f"{note + ' ' if note else ''}(default {getattr(defaults, f.name)!r})")


def config_from_args(ns: argparse.Namespace, base: Config | None = None) -> tuple[Config, dict]:
    """Build a Config: ``base`` (or defaults), then the preset, then explicit options.
    Returns the config and the explicitly given options."""
    explicit = {f.name: getattr(ns, f.name) for f in fields(Config) if getattr(ns, f.name, None) is not None}
    cfg = base or Config()
    if base is None:
        preset = explicit.get("preset", "default")
        if preset not in PRESETS:
            raise SystemExit(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        cfg = replace(cfg, **PRESETS[preset], preset=preset)
    cfg = replace(cfg, **explicit)
    if not cfg.out:
        cfg = replace(cfg, out=f"runs/{cfg.preset}-s{cfg.seed}")
    validate(cfg)
    return cfg, explicit


def validate(cfg: Config) -> None:
    choices = {
        "model": ("bionic", "cnn"), "front": ("paper", "wide"),
        "lr_schedule": ("cosine", "onecycle", "plateau", "constant"),
        "select_metric": ("val_acc", "val_f1", "val_loss"),
        "amp": ("auto", "bf16", "off"), "compile": ("auto", "on", "off"),
        "channels_last": ("auto", "on", "off"), "deterministic": ("auto", "on", "off"),
        "mask": ("connectome", "random", "degree_shuffle", "label_shuffle", "dense"),
        "column_backend": ("auto", "dense", "sparse"),
    }
    for k, allowed in choices.items():
        if getattr(cfg, k) not in allowed:
            raise ValueError(f"--{k} {getattr(cfg, k)!r}: choose one of {', '.join(allowed)}")
    if cfg.batch_size < 1 or cfg.epochs < 1:
        raise ValueError("batch_size and epochs must be >= 1")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.val_usage == "PrivateTest" or cfg.train_usage == "PrivateTest":
        raise ValueError("PrivateTest is only ever evaluated (pipelines.evaluate), never used "
                         "for training or model selection")
