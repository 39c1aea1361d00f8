"""BioNIC and the plain-CNN baseline for 48x48 greyscale faces -> 7 emotions.

``BioNIC``: conv front end -> connectome-compiled cortical column (``graphnet``) -> linear head::

    (B,1,48,48) -conv k,8- ReLU - FastLateralInhibition2d - maxpool 2 -> (B,8,24,24)
                -conv k,16- ReLU - CBAM attention - pool to feat_size -> (B,16,f,f) -> flatten (B,16 f^2)
                -> column: dense input projection -> A (4P) -> B (23P) -> C (L5) -> D (L6)
                -> Linear(|D|, 7)

``front="wide"``: three VGG-style blocks (two 3x3 conv + BatchNorm + ReLU, maxpool 2) of
``wide_channels`` filters (lateral inhibition after the very first conv, CBAM after the last
block), pooled to ``feat_size``. ``conv_layers=False`` feeds the column the raw pixels
(B, 2304) -- the paper's "no conv layers" ablation.

``PlainCNN`` (``--preset cnn``): the same conv front end without lateral inhibition or attention,
then ``Linear(F, H) - ReLU - Dropout - Linear(H, 7)`` with ``H`` chosen so the parameter count is
about the paper's plain CNN (1,381,223) unless ``cnn_hidden`` is set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from graphnet import ColumnSpec, compile_column
from graphnet.column import trainable_parameters

from .config import Config
from .fer2013 import NUM_CLASSES
from .frontend import FrontEnd

PAPER_CNN_PARAMS = 1_381_223


class BioNIC(nn.Module):
    """Front end -> cortical column -> linear classifier. ``plasticity_step()`` after each
    optimiser step runs the column's Hebbian + homeostatic update."""

    def __init__(self, cfg: Config, graph: Any, device: torch.device | str | None = None,
                 spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.front = FrontEnd(cfg)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        # a saved run's resolved spec wins over the preset defaults of this code
        self.spec = ColumnSpec.from_dict(spec) if spec is not None else cfg.column_spec()
        self.column = compile_column(graph, self.spec, in_features=self.front.out_features,
                                     device=device)
        self.head = nn.Linear(self.column.out_features, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 1, 48, 48) normalised -> logits (B, 7)
        return self.head(self.column(self.dropout(self.front(x))))

    def plasticity_step(self) -> dict:
        return self.column.plasticity_step()


class PlainCNN(nn.Module):
    """The baseline: front end (no lateral inhibition / attention) -> MLP head."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.front = FrontEnd(cfg, lateral=False, attention=False)
        nf = self.front.out_features
        hidden = cfg.cnn_hidden
        if hidden <= 0:
            front_params = sum(p.numel() for p in self.front.parameters())
            hidden = max(8, round((PAPER_CNN_PARAMS - front_params - NUM_CLASSES) / (nf + 1 + NUM_CLASSES)))
        self.hidden = hidden
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
            nn.Linear(nf, hidden), nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
            nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.front(x))

    def plasticity_step(self) -> dict:
        return {}


def build_model(cfg: Config, graph: Any = None, device: torch.device | str | None = None,
                spec: dict[str, Any] | None = None) -> nn.Module:
    """The model a config describes (``graph`` is needed for ``model="bionic"``; ``spec``: a
    saved ``ColumnSpec.to_dict()`` to build the column from instead of the config's)."""
    if cfg.model == "cnn":
        m = PlainCNN(cfg)
    else:
        if graph is None:
            raise ValueError("model=bionic needs a connectome graph")
        m = BioNIC(cfg, graph, device=device, spec=spec)
    return m.to(device) if device is not None else m


def column_spec_of(model: nn.Module) -> dict[str, Any] | None:
    """The resolved ``ColumnSpec.to_dict()`` of a BioNIC model (None for the plain CNN)."""
    spec = getattr(model, "spec", None)
    return spec.to_dict() if spec is not None else None


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters in total and per top-level part; a masked layer's weight counts its
    connections, not the dense matrix that stores them (:func:`graphnet.column.trainable_parameters`)."""
    out = {name: trainable_parameters(mod) for name, mod in model.named_children()}
    out["total"] = trainable_parameters(model)
    return out


def describe(model: nn.Module) -> str:
    c = count_parameters(model)
    parts = ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "total" and v)
    return f"{type(model).__name__}: {c['total']:,} parameters ({parts})"
