"""Dense linear layer with a fixed binary connectivity mask."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .projection import SignedProjection, check_scale, init_edge_weights


class MaskedLinear(SignedProjection, nn.Module):
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
        self._register_sign(sign, device, dtype)
        self.register_buffer("scale", check_scale(scale, tuple(mask.shape), "mask shape", device),
                             persistent=False)
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
        w = self.signed_weight()
        return torch.where(self.mask, w, torch.zeros((), dtype=w.dtype, device=w.device))

    def weight_sign(self) -> Tensor | None:
        """``(in,)`` Dale sign, broadcast over the ``(out, in)`` weight's rows."""
        return self.sign

    def _keep_connections(self, w: Tensor) -> Tensor:
        return torch.where(self.mask, w, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        # x: (*, in) -> (*, out)
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    # -- connectivity ---------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

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
