r"""What every connectome projection shares: Dale signs, initial scales, the initial weights and
the sign-constrained weight parametrisation.

:class:`~graphnet.MaskedLinear` (dense weight times a mask) and :class:`~graphnet.SparseLinear`
(one weight per edge) store their weights differently but apply the same map

.. math::
    \mathcal{D}(w_{ij}) = \begin{cases} s_j |w_{ij}| & s_j \neq 0 \\ w_{ij} & s_j = 0 \end{cases}

with :math:`s_j \in \{+1, -1, 0\}` the Dale sign of presynaptic unit :math:`j` (E = +1, I = -1,
0 = unconstrained). :class:`SignedProjection` holds that part once; each layer says how a
per-presynaptic-unit vector lines up with its weight storage (:meth:`SignedProjection.weight_sign`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def init_edge_weights(
    rows: Tensor,
    n_out: int,
    scale: Tensor | None = None,
    sign: Tensor | None = None,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Initial values of ``E`` connections, given the postsynaptic unit (``rows``) of each.

    .. math::
        w_e = \sigma_e r_e, \quad r_e \sim U(-\sqrt3, \sqrt3), \quad
        \sigma_e = g \, \frac{s_e}{\sqrt{\sum_{e' \to i} s_{e'}^2}}

    with :math:`i` the postsynaptic unit of :math:`e` and :math:`s_e` the connection's scale
    (1 for every edge by default, or its synapse count / summed size). With all
    :math:`s_e = 1`, :math:`\sigma = g / \sqrt{\text{fan-in}_i}`: the *masked* fan-in, so an
    output has variance :math:`g^2` for unit-variance inputs whatever the density. With
    ``sign`` (per edge: +1, -1, or 0 = free), :math:`w_e \leftarrow \mathrm{sign}_e |w_e|`.
    Edges are drawn in the order given, so the same generator state gives the same values for
    dense and sparse layers (both enumerate connections in CSR order: by row, then column).
    """
    dtype = dtype or torch.get_default_dtype()
    E = rows.numel()
    r = (torch.rand(E, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * math.sqrt(3.0)
    r = r.to(rows.device)
    s = torch.ones(E, dtype=torch.float64, device=rows.device) if scale is None \
        else scale.to(torch.float64).abs()
    ss = torch.zeros(n_out, dtype=torch.float64, device=rows.device).index_add_(0, rows, s * s)
    sigma = gain * s / ss.sqrt().clamp_min(1e-300)[rows]
    w = sigma * r
    if sign is not None:
        sg = sign.to(torch.float64)
        w = torch.where(sg != 0, sg * w.abs(), w)
    return w.to(dtype)


#: :math:`\mathbb{E}[\mathrm{ReLU}(u)]` for :math:`u \sim \mathcal{N}(0, 1)`: the mean input a column
#: layer receives from an upstream layer whose pre-activation is LayerNorm'd (mean 0, variance 1).
RELU_NORMAL_MEAN = 1.0 / math.sqrt(2.0 * math.pi)
#: :math:`\mathrm{Var}[\mathrm{ReLU}(u)] = 1/2 - 1/(2\pi)` for the same :math:`u`.
RELU_NORMAL_VAR = 0.5 - 1.0 / (2.0 * math.pi)


def summed_weight(proj: nn.Module) -> Tensor:
    r"""``(out,)`` :math:`\sum_j \mathcal{D}(w_{ij})`: each postsynaptic unit's summed effective
    weight (mask and Dale sign included) of a :class:`~graphnet.MaskedLinear`,
    :class:`~graphnet.SparseLinear` or plain ``nn.Linear``."""
    if isinstance(proj, nn.Linear):
        return proj.weight.sum(1)
    pre_post = proj.connections()
    vals = proj.edge_values()
    return torch.zeros(proj.out_features, dtype=vals.dtype, device=vals.device).index_add_(
        0, pre_post[1], vals)


def apply_dale(w: Tensor, sign: Tensor | None) -> Tensor:
    r""":math:`\mathcal{D}(w)`: entries with sign :math:`\pm 1` take that sign on :math:`|w|`,
    sign 0 (or ``sign=None``) leaves them free. ``sign`` broadcasts against ``w``."""
    if sign is None:
        return w
    return torch.where(sign != 0, sign * w.abs(), w)


def dale_project(w: Tensor, sign: Tensor | None) -> Tensor:
    """Project weights onto Dale's set: entries with sign +1 clamped to >= 0, -1 to <= 0."""
    if sign is None:
        return w
    return torch.where(sign > 0, w.clamp_min(0.0), torch.where(sign < 0, w.clamp_max(0.0), w))


def check_sign(sign: Tensor | None, in_features: int, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> Tensor | None:
    """``sign`` as an ``(in_features,)`` tensor of +1/-1/0, or ``None``; ``ValueError`` otherwise."""
    if sign is None:
        return None
    sign = torch.as_tensor(sign, device=device, dtype=dtype or torch.get_default_dtype())
    if sign.shape != (in_features,):
        raise ValueError(f"sign shape {tuple(sign.shape)} != ({in_features},)")
    if not bool(((sign == 0) | (sign == 1) | (sign == -1)).all()):
        raise ValueError("sign entries must be +1, -1 or 0")
    return sign


def check_scale(scale: Tensor | None, shape: tuple[int, ...], what: str,
                device: torch.device | str | None = None) -> Tensor | None:
    """``scale`` as a float32 tensor of ``shape`` (the weight storage), or ``None``;
    ``ValueError`` naming ``what`` (e.g. ``"mask shape"``) otherwise."""
    if scale is None:
        return None
    scale = torch.as_tensor(scale, device=device, dtype=torch.float32)
    if tuple(scale.shape) != tuple(shape):
        raise ValueError(f"scale shape {tuple(scale.shape)} != {what} {tuple(shape)}")
    return scale


class SignedProjection:
    """Mixin of :class:`~graphnet.MaskedLinear` and :class:`~graphnet.SparseLinear` (used with an
    ``nn.Module``): the ``sign`` buffer, Dale's parametrisation and projection, density and the
    printed summary. A subclass stores ``weight`` (any shape), ``in_features``,
    ``out_features``, ``bias`` and ``n_edges`` and says how ``sign`` lines up with ``weight``
    (:meth:`weight_sign`) and which entries of a weight-shaped tensor exist
    (:meth:`_keep_connections`)."""

    in_features: int
    out_features: int
    weight: nn.Parameter
    bias: nn.Parameter | None
    sign: Tensor | None

    def _register_sign(self, sign: Tensor | None, device: torch.device | str | None,
                       dtype: torch.dtype | None) -> None:
        self.register_buffer("sign", check_sign(sign, self.in_features, device, dtype))  # type: ignore[attr-defined]

    @property
    def n_edges(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def weight_sign(self) -> Tensor | None:
        """The Dale sign broadcastable against ``weight`` (``None`` without Dale's law)."""
        raise NotImplementedError

    def _keep_connections(self, w: Tensor) -> Tensor:
        """``w`` (weight-shaped) with entries that are not connections set to zero."""
        return w

    def signed_weight(self) -> Tensor:
        """``weight`` under Dale's parametrisation (``weight``'s shape)."""
        return apply_dale(self.weight, self.weight_sign())

    @property
    def density(self) -> float:
        return self.n_edges / max(1, self.in_features * self.out_features)

    @torch.no_grad()
    def set_effective_weight_(self, w: Tensor) -> None:
        """Store ``w`` (weight-shaped) as the effective weight: entries off the graph set to zero
        and, with Dale signs, each entry projected onto its sign (so ``effective_weight() == w``
        after projection)."""
        self.weight.copy_(self._keep_connections(dale_project(w, self.weight_sign())))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"edges={self.n_edges}, density={self.density:.4f}, bias={self.bias is not None}, "
                f"dale={self.sign is not None}")
