"""Dense linear layer with a fixed binary connectivity mask."""

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


def dale_project(w: Tensor, sign: Tensor | None) -> Tensor:
    """Project weights onto Dale's set: entries with sign +1 clamped to >= 0, -1 to <= 0."""
    if sign is None:
        return w
    return torch.where(sign > 0, w.clamp_min(0.0), torch.where(sign < 0, w.clamp_max(0.0), w))


class MaskedLinear(nn.Module):
    r"""Linear map whose weight is a dense matrix times a fixed binary mask.

    .. math::
        \mathbf{y} = \mathbf{x} \, \big(\mathbf{M} \odot \mathcal{D}(\mathbf{W})\big)^{\top}
        + \mathbf{b}, \qquad
        \mathcal{D}(\mathbf{W})_{ij} = \begin{cases} s_j |W_{ij}| & s_j \neq 0 \\
        W_{ij} & s_j = 0 \end{cases}

    with :math:`\mathbf{M} \in \{0,1\}^{\text{out} \times \text{in}}` (row = postsynaptic unit,
    column = presynaptic unit) kept as a buffer and :math:`s_j \in \{+1, -1, 0\}` the optional
    Dale sign of presynaptic unit :math:`j` (E = +1, I = -1, 0 = unconstrained).

    * Masked entries of ``weight`` are zero at initialisation and receive exactly zero gradient
      (``torch.where``), so they stay exactly zero through any optimiser step, including AdamW
      with weight decay; loading a state dict re-zeroes them (the mask travels in the state dict).
    * Dale's law is a parametrisation (:math:`s_j |W_{ij}|`): the effective weight has the sign of
      its presynaptic class after every step, whatever the optimiser does; :meth:`set_effective_weight_`
      (used by Hebbian updates) projects onto the constraint and stores :math:`W` with that sign.
    * Initialisation: :func:`init_edge_weights`, scaled by each unit's *masked* fan-in.

    Args:
        in_features: presynaptic units.
        out_features: postsynaptic units.
        mask: ``(out_features, in_features)`` bool/0-1 connectivity.
        bias: learn an additive bias.
        sign: ``(in_features,)`` Dale sign per presynaptic unit, or ``None``.
        scale: ``(out_features, in_features)`` initial magnitude scale (e.g. synapse counts), or
            ``None`` for fan-in scaling.
        gain: target standard deviation of an output for unit-variance inputs.
        generator: random generator for the initial weights.

    Shapes:
        - **input:** :math:`(*, \text{in})`
        - **output:** :math:`(*, \text{out})`
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: Tensor,
        bias: bool = True,
        sign: Tensor | None = None,
        scale: Tensor | None = None,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.gain = float(gain)
        mask = torch.as_tensor(mask, device=device).to(torch.bool)
        if mask.shape != (self.out_features, self.in_features):
            raise ValueError(f"mask shape {tuple(mask.shape)} != (out, in) = "
                             f"({self.out_features}, {self.in_features})")
        self.register_buffer("mask", mask)
        if sign is not None:
            sign = torch.as_tensor(sign, device=device, dtype=dtype or torch.get_default_dtype())
            if sign.shape != (self.in_features,):
                raise ValueError(f"sign shape {tuple(sign.shape)} != ({self.in_features},)")
            if not bool(((sign == 0) | (sign == 1) | (sign == -1)).all()):
                raise ValueError("sign entries must be +1, -1 or 0")
        self.register_buffer("sign", sign)
        if scale is not None:
            scale = torch.as_tensor(scale, device=device, dtype=torch.float32)
            if scale.shape != mask.shape:
                raise ValueError(f"scale shape {tuple(scale.shape)} != mask shape {tuple(mask.shape)}")
        self.register_buffer("scale", scale, persistent=False)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features,
                                               device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(self.out_features, device=device, dtype=dtype)) \
            if bias else None
        self.register_load_state_dict_post_hook(MaskedLinear._after_load)
        self.reset_parameters(generator)

    # -- parameters ---------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        rows, cols = self.mask.nonzero(as_tuple=True)  # row-major = CSR order
        w = init_edge_weights(
            rows, self.out_features,
            scale=None if self.scale is None else self.scale[rows, cols],
            sign=None if self.sign is None else self.sign[cols],
            gain=self.gain, generator=generator, dtype=self.weight.dtype,
        )
        self.weight.zero_()
        self.weight[rows, cols] = w
        if self.bias is not None:
            self.bias.zero_()

    @staticmethod
    def _after_load(module: "MaskedLinear", incompatible_keys) -> None:
        with torch.no_grad():
            module.weight.masked_fill_(~module.mask, 0.0)

    def effective_weight(self) -> Tensor:
        """``(out, in)`` weight the layer applies: mask and Dale sign included."""
        w = self.weight
        if self.sign is not None:
            w = torch.where(self.sign != 0, self.sign * w.abs(), w)
        return torch.where(self.mask, w, torch.zeros((), dtype=w.dtype, device=w.device))

    def forward(self, x: Tensor) -> Tensor:
        # x: (*, in) -> (*, out)
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    # -- connectivity ---------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    @property
    def density(self) -> float:
        return self.n_edges / max(1, self.mask.numel())

    @property
    def fan_in(self) -> Tensor:
        """``(out,)`` number of presynaptic connections of each unit."""
        return self.mask.sum(1)

    def connections(self) -> Tensor:
        """``(2, E)`` connections ``[pre, post]`` (PyG source-to-target), CSR order."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return torch.stack([cols, rows])

    def edge_values(self) -> Tensor:
        """``(E,)`` effective weight of each connection, in :meth:`connections` order."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return self.effective_weight()[rows, cols]

    # -- plasticity interface (see graphnet.plasticity) -------------------------------------------
    def outer_mean(self, y: Tensor, x: Tensor) -> Tensor:
        """``<y x^T>`` over the batch at the connections: ``(B, out), (B, in) -> (out, in)``."""
        return torch.where(self.mask, y.t() @ x / y.shape[0], 0.0)

    def expand_post(self, v: Tensor) -> Tensor:
        """A per-postsynaptic-unit ``(out,)`` vector broadcast to the weight's shape."""
        return v.unsqueeze(1).expand(self.out_features, self.in_features)

    @torch.no_grad()
    def set_effective_weight_(self, w: Tensor) -> None:
        """Store ``w`` (weight-shaped) as the effective weight: masked entries set to zero and,
        with Dale signs, each entry projected onto its sign (so ``effective_weight() == w``
        after projection)."""
        w = dale_project(w, self.sign)
        self.weight.copy_(torch.where(self.mask, w, 0.0))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"edges={self.n_edges}, density={self.density:.4f}, bias={self.bias is not None}, "
                f"dale={self.sign is not None}")
