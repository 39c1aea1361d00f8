"""The conv front end: (B, 1, 48, 48) faces -> (B, F) features for the column or the CNN head.

``front="paper"``: conv (``conv1_channels``) - ReLU - lateral inhibition - maxpool 2 - conv
(``conv2_channels``) - ReLU - CBAM attention - pooled to ``feat_size`` x ``feat_size``.
``front="wide"``: three VGG-style blocks (two 3x3 conv + BatchNorm + ReLU, maxpool 2) of
``wide_channels`` filters (lateral inhibition after the very first conv, CBAM after the last
block), pooled to ``feat_size``. ``conv_layers=False`` passes the (pooled) pixels through.

Parts: :class:`LateralInhibition2d` (the reference divisive normalisation over neighbouring
channels and positions) and :class:`FastLateralInhibition2d` (the same numbers as one fixed
convolution of :math:`x^2` with a fused backward, :class:`DivisiveNormFunction`; the one the
models use), :class:`CBAM`, :class:`AdaptiveAvgPool2dMM`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import Config


class LateralInhibition2d(nn.Module):
    r"""Divisive normalisation of a conv feature map over neighbouring channels and positions.

    .. math::
        y_{c,u,v} = x_{c,u,v} \Big/ \Big(k + \frac{\alpha}{n\,s^2}
        \sum_{|c'-c| \le \lfloor n/2 \rfloor} \; \sum_{|u'-u|, |v'-v| \le \lfloor s/2 \rfloor}
        x_{c',u',v'}^2 \Big)^{\beta}

    i.e. each unit is divided by the mean squared activity of a window of ``n`` channels by
    ``s x s`` positions around it (zero padded; the divisor counts the padding, like
    :class:`torch.nn.LocalResponseNorm`, which this equals for ``s = 1``). Strongly active
    neighbours suppress a unit; an isolated unit is (almost) unchanged when :math:`\alpha` is small
    relative to :math:`k`. No learnable parameters.

    Args:
        size: channels :math:`n` in the window (odd).
        spatial: positions :math:`s` per side of the window (odd).
        alpha: :math:`\alpha`.
        beta: :math:`\beta`.
        k: :math:`k`.

    Shapes:
        - **input:** :math:`(N, C, H, W)`
        - **output:** :math:`(N, C, H, W)`
    """

    def __init__(self, size: int = 5, spatial: int = 3, alpha: float = 1.0, beta: float = 0.75,
                 k: float = 1.0) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0 or spatial < 1 or spatial % 2 == 0:
            raise ValueError(f"size and spatial must be odd and >= 1, got {size}, {spatial}")
        if k <= 0 or alpha < 0:
            raise ValueError("need k > 0 and alpha >= 0")
        self.size, self.spatial = int(size), int(spatial)
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def reset_parameters(self) -> None:  # no parameters
        pass

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C, H, W) -> (N, C, H, W)
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        sq = x.pow(2).unsqueeze(1)  # (N, 1, C, H, W)
        n, s = self.size, self.spatial
        mean = F.avg_pool3d(sq, (n, s, s), stride=1, padding=(n // 2, s // 2, s // 2),
                            count_include_pad=True).squeeze(1)
        return x / (self.k + self.alpha * mean).pow(self.beta)

    def extra_repr(self) -> str:
        return (f"size={self.size}, spatial={self.spatial}, alpha={self.alpha}, "
                f"beta={self.beta}, k={self.k}")


def lateral_window_kernel(channels: int, size: int, spatial: int) -> Tensor:
    """``(C, C, s, s)`` conv kernel whose output is the mean of :math:`x^2` over the ``size``
    channels x ``spatial`` x ``spatial`` zero-padded window of :class:`LateralInhibition2d` (the
    divisor counts the padding, as there)."""
    w = torch.zeros(channels, channels, spatial, spatial)
    h = size // 2
    for c in range(channels):
        w[c, max(0, c - h):min(channels, c + h + 1)] = 1.0 / (size * spatial * spatial)
    return w


class DivisiveNormFunction(torch.autograd.Function):
    r"""Divisive normalisation with the exponent fixed at :math:`\beta = 3/4`:
    :math:`y = x\,t^{-3/4}`, :math:`t = k + \alpha\,\mathrm{conv2d}(x^2, \text{window})`: forward
    and a hand-written backward with rsqrt/sqrt/mul only (autograd's rsqrt/pow backward calls a
    slow ``pow``) and few passes over the ``(B, C, H, W)`` maps."""

    @staticmethod
    def forward(ctx, x: Tensor, window: Tensor, k: float, alpha: float, padding: int) -> Tensor:
        t = F.conv2d(x * x, window, padding=padding)
        if alpha != 1.0:
            t.mul_(alpha)
        t.add_(k)
        r = torch.rsqrt(t)            # t^-1/2
        r.mul_(torch.sqrt(r))         # t^-3/4
        ctx.save_for_backward(x, window, t, r)
        ctx.alpha, ctx.padding = alpha, padding
        return x * r

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, window, t, r = ctx.saved_tensors
        # dL/dt = -3/4 dy x t^-7/4 = -3/4 dy x r / t ;  dL/dx = dy r + 2 x conv^T(alpha dL/dt)
        q = dy * x
        q.mul_(r).div_(t).mul_(-0.75 * ctx.alpha)
        # conv^T as a conv with the transposed, flipped kernel (mkldnn/cuDNN fast path)
        ds = F.conv2d(q, window.transpose(0, 1).flip(2, 3), padding=ctx.padding)
        dx = dy * r
        dx.addcmul_(x, ds, value=2.0)
        return dx, None, None, None, None


class FastLateralInhibition2d(LateralInhibition2d):
    """:class:`LateralInhibition2d` for a fixed channel count, with the same formula and (empty)
    state dict, computed as one fixed convolution of :math:`x^2` (an mkldnn/cuDNN kernel) instead
    of an ``avg_pool3d``, with a fused backward for the default beta = 3/4
    (:class:`DivisiveNormFunction`); always in float32 (autocast off inside). ~5x faster
    forward+backward than the reference on CPU for the paper's (256, 8, 48, 48) maps. Inputs
    whose channel count is not ``channels`` take the reference path.

    Args:
        channels: :math:`C` of the inputs; the other arguments are :class:`LateralInhibition2d`'s.
    """

    def __init__(self, channels: int, size: int = 5, spatial: int = 3, alpha: float = 1.0,
                 beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__(size=size, spatial=spatial, alpha=alpha, beta=beta, k=k)
        self.channels = int(channels)
        self.register_buffer("window", lateral_window_kernel(self.channels, self.size, self.spatial),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, C, H, W) -> (N, C, H, W)
        if x.ndim != 4 or x.shape[1] != self.channels:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            w = self.window.float()
            if self.beta == 0.75:
                return DivisiveNormFunction.apply(x, w, self.k, self.alpha, self.spatial // 2)
            t = self.k + self.alpha * F.conv2d(x * x, w, padding=self.spatial // 2)
            return x / t.pow(self.beta)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, " + super().extra_repr()


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
