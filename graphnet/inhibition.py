"""Inhibition: graded (per cell, from the connectome) and lateral (conv feature maps).

:class:`LateralInhibition2d` is the reference formula; :class:`FastLateralInhibition2d` computes
the same numbers as one fixed convolution of :math:`x^2` with a fused backward (the one the
training pipeline uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

    from connectomics.graph import ConnectomeGraph


def inhibitory_input(
    graph: "ConnectomeGraph",
    cells: Sequence[int] | np.ndarray,
    measure: str = "n_synapses",
    min_synapses: int = 1,
) -> np.ndarray:
    """Inhibitory input of each of ``cells`` (node indices) from the whole graph.

    ``measure="n_synapses"``: synapses onto the cell from inhibitory (``ei == "I"``) cells;
    ``"connections"``: number of inhibitory presynaptic cells. Only pairs with at least
    ``min_synapses`` synapses count. Returns ``(len(cells),)`` float64.
    """
    cells = np.asarray(cells, dtype=np.int64)
    e = graph.edges
    is_i = (graph.nodes["ei"].to_numpy() == "I")
    pre = e["pre"].to_numpy()
    keep = is_i[pre] & (e["n_synapses"].to_numpy() >= min_synapses)
    post = e["post"].to_numpy()[keep]
    if measure == "n_synapses":
        w = e["n_synapses"].to_numpy()[keep].astype(np.float64)
    elif measure == "connections":
        w = np.ones(int(keep.sum()))
    else:
        raise ValueError(f"measure={measure!r}; choose 'n_synapses' or 'connections'")
    per_node = np.bincount(post, weights=w, minlength=graph.n_nodes)
    return per_node[cells]


def population_inhibitory_input(type_graph: "nx.DiGraph", population: str,
                                measure: str = "n_synapses") -> float:
    """Inhibitory input of one cell of ``population`` from a type-level graph (the mean over the
    population, as :func:`inhibitory_input` gives per cell of a neuron-level graph).

    ``measure="n_synapses"``: synapses from inhibitory populations per cell of ``population``;
    ``"connections"``: expected inhibitory presynaptic cells (connection probability times the
    presynaptic population's cells other than the cell itself, summed).
    """
    if measure not in ("n_synapses", "connections"):
        raise ValueError(f"measure={measure!r}; choose 'n_synapses' or 'connections'")
    n = type_graph.nodes[population]["n_cells"]
    c = 0.0
    for q in type_graph.predecessors(population):
        if type_graph.nodes[q]["ei"] != "I":
            continue
        ed = type_graph.edges[q, population]
        if measure == "n_synapses":
            c += ed["n_synapses"] / n
        else:  # presynaptic candidates: the other cells of q (no autapse within a population)
            c += ed["connection_probability"] * (type_graph.nodes[q]["n_cells"] - (q == population))
    return c


class GradedInhibition(nn.Module):
    r"""Scale each neuron's activity down by its normalised inhibitory input from the graph.

    .. math::
        h_i \leftarrow g_i \, h_i, \qquad g_i = 1 - \alpha \, \iota_i, \qquad
        \iota_i = \frac{c_i}{\max_{k \in \text{layer}} c_k} \in [0, 1]

    with :math:`c_i` the inhibitory input of cell :math:`i` (inhibitory synapses onto it, or
    inhibitory presynaptic cells; :func:`inhibitory_input`) and :math:`\alpha \in [0, 1]` the
    strength: the most inhibited cell of a layer keeps :math:`1 - \alpha` of its activity, a cell
    without inhibitory input all of it (:math:`\iota = 0` everywhere when no cell has any). The gain
    is a fixed buffer: inhibitory cells are not units of the network, they act through it.

    Args:
        inhibitory_input: ``(n,)`` non-negative inhibitory input :math:`c` per neuron.
        strength: :math:`\alpha`.

    Shapes:
        - **input:** :math:`(*, n)`
        - **output:** :math:`(*, n)`
    """

    def __init__(self, inhibitory_input: Tensor | np.ndarray, strength: float = 0.5) -> None:
        super().__init__()
        c = torch.as_tensor(np.asarray(inhibitory_input, dtype=np.float64)).to(torch.get_default_dtype())
        if c.ndim != 1 or bool((c < 0).any()):
            raise ValueError("inhibitory_input must be a non-negative 1-D vector")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = float(strength)
        self.register_buffer("inhibitory_input", c)
        self.register_buffer("gain", torch.empty_like(c))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        c = self.inhibitory_input
        m = c.max() if c.numel() else c.new_zeros(())
        iota = c / m if float(m) > 0 else torch.zeros_like(c)
        self.gain.copy_(1.0 - self.strength * iota)

    @property
    def iota(self) -> Tensor:
        return (1.0 - self.gain) / self.strength if self.strength > 0 else torch.zeros_like(self.gain)

    def forward(self, h: Tensor) -> Tensor:
        # h: (*, n) -> (*, n)
        return h * self.gain

    def extra_repr(self) -> str:
        return (f"n={self.gain.numel()}, strength={self.strength}, "
                f"gain=[{float(self.gain.min()) if self.gain.numel() else 1:.3f}, "
                f"{float(self.gain.max()) if self.gain.numel() else 1:.3f}]")


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


class DivisiveNorm075(torch.autograd.Function):
    r""":math:`y = x\,t^{-3/4}`, :math:`t = k + \alpha\,\mathrm{conv2d}(x^2, \text{window})`: forward
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
    (:class:`DivisiveNorm075`); always in float32 (autocast off inside). ~5x faster
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
                return DivisiveNorm075.apply(x, w, self.k, self.alpha, self.spatial // 2)
            t = self.k + self.alpha * F.conv2d(x * x, w, padding=self.spatial // 2)
            return x / t.pow(self.beta)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, " + super().extra_repr()
