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
from torch.nn import functional as F

from graphnet import ColumnSpec, FastLateralInhibition2d, compile_column

from .config import Config
from .fer2013 import NUM_CLASSES

PAPER_CNN_PARAMS = 1_381_223


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel attention from avg- and max-pooled
    descriptors through a shared MLP, then spatial attention from a 7x7 conv over the channel-wise
    mean and max maps. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int = 4, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(2, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, C, H, W); the avg- and max-pooled descriptors go through the MLP
        # as one batch of 2B
        b = x.shape[0]
        ca = self.mlp(torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)], 0))
        x = x * torch.sigmoid(ca[:b] + ca[b:])
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        if x.is_contiguous(memory_format=torch.channels_last):
            # keep the 7x7 conv on the channels_last path (its NCHW backward is ~3x slower on CPU)
            s = s.contiguous(memory_format=torch.channels_last)
        return x * torch.sigmoid(self.spatial(s))


class AdaptiveAvgPool2dMM(nn.Module):
    """``nn.AdaptiveAvgPool2d(size_out)`` for a fixed ``size_in`` as two small matmuls
    ``P x P^T`` (its windows are rectangles with uniform weights, so the pooling is separable);
    same numbers, ~2x faster forward+backward on CPU than the adaptive-pool kernel."""

    def __init__(self, size_in: int, size_out: int) -> None:
        super().__init__()
        p = torch.zeros(size_out, size_in)
        for i in range(size_out):
            a, b = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
            p[i, a:b] = 1.0 / (b - a)
        self.size_in, self.size_out = size_in, size_out
        self.register_buffer("p", p, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, size_in, size_in) -> (B, C, size_out, size_out)
        if x.shape[-2:] != (self.size_in, self.size_in):
            return F.adaptive_avg_pool2d(x, self.size_out)
        p = self.p.to(x.dtype)
        return torch.matmul(torch.matmul(p, x), p.t())

    def extra_repr(self) -> str:
        return f"{self.size_in} -> {self.size_out}"


def _pool_to(size_in: int, size_out: int) -> nn.Module:
    if size_in == size_out:
        return nn.Identity()
    if size_in % size_out == 0:
        return nn.MaxPool2d(size_in // size_out)
    return AdaptiveAvgPool2dMM(size_in, size_out)


def _lateral(cfg: Config, channels: int) -> nn.Module:
    if not cfg.lateral_inhibition:
        return nn.Identity()
    size = min(cfg.lateral_size, channels if channels % 2 else channels - 1)
    return FastLateralInhibition2d(channels, size=max(1, size))


class FrontEnd(nn.Module):
    """Conv feature extractor: (B, 1, 48, 48) -> (B, out_features)."""

    def __init__(self, cfg: Config, lateral: bool | None = None, attention: bool | None = None) -> None:
        super().__init__()
        lateral = cfg.lateral_inhibition if lateral is None else lateral
        attention = cfg.attention if attention is None else attention
        f = cfg.feat_size
        if not cfg.conv_layers:
            self.net = nn.Sequential(_pool_to(48, f) if f < 48 else nn.Identity())
            self.out_features = min(f, 48) ** 2
            return
        if cfg.front == "paper":
            c1, c2, k = cfg.conv1_channels, cfg.conv2_channels, cfg.kernel_size
            layers: list[nn.Module] = [nn.Conv2d(1, c1, k, padding=k // 2), nn.ReLU(inplace=True)]
            if lateral:
                layers.append(_lateral(cfg, c1))
            layers += [nn.MaxPool2d(2), nn.Conv2d(c1, c2, k, padding=k // 2), nn.ReLU(inplace=True)]
            if attention:
                layers.append(CBAM(c2))
            layers.append(_pool_to(24, f))
            self.out_features = c2 * f * f
        else:  # wide
            chans = [int(c) for c in cfg.wide_channels.split(",")]
            layers, cin, side = [], 1, 48
            for bi, c in enumerate(chans):
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                if bi == 0 and lateral:
                    layers.append(_lateral(cfg, c))
                layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                cin, side = c, side // 2
            if attention:
                layers.append(CBAM(cin))
            layers.append(_pool_to(side, f))
            self.out_features = cin * f * f
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.net(x), 1)


class BioNIC(nn.Module):
    """Front end -> cortical column -> linear classifier. ``plasticity_step()`` after each
    optimiser step runs the column's Hebbian + homeostatic update."""

    def __init__(self, cfg: Config, graph: Any, device: torch.device | str | None = None,
                 spec: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.front = FrontEnd(cfg)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        # a saved run's resolved spec wins over today's preset defaults
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
    """Trainable parameters in total and per top-level part."""
    out = {name: sum(p.numel() for p in mod.parameters() if p.requires_grad)
           for name, mod in model.named_children()}
    out["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out


def describe(model: nn.Module) -> str:
    c = count_parameters(model)
    parts = ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "total" and v)
    return f"{type(model).__name__}: {c['total']:,} parameters ({parts})"
