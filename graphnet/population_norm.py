r"""LayerNorm whose gain and shift are shared by the units of a population.

.. math::
    u_i = \gamma_{P(i)} \, \frac{z_i - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta_{P(i)}

with :math:`\mu, \sigma^2` the mean and variance over the layer's units (as
:class:`torch.nn.LayerNorm`) and :math:`\gamma, \beta` one per population :math:`P` instead of
one per unit: the normalisation of a column whose parameters are per population
(``weights="counts"``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class PopulationLayerNorm(nn.Module):
    """Args:
        size: units :math:`n` (normalised together).
        groups: ``(n,)`` population code of each unit (0 .. P-1).
        eps: added to the variance.

    Shapes:
        - **input:** :math:`(*, n)`
        - **output:** :math:`(*, n)`
    """

    def __init__(self, size: int, groups: Tensor | np.ndarray, eps: float = 1e-5) -> None:
        super().__init__()
        groups = torch.as_tensor(np.asarray(groups), dtype=torch.long)
        if groups.shape != (int(size),):
            raise ValueError(f"groups shape {tuple(groups.shape)} != ({size},)")
        self.size, self.eps = int(size), float(eps)
        self.register_buffer("groups", groups)
        n_groups = int(groups.max()) + 1 if groups.numel() else 0
        self.weight = nn.Parameter(torch.ones(n_groups))
        self.bias = nn.Parameter(torch.zeros(n_groups))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, z: Tensor) -> Tensor:
        # z: (*, n) -> (*, n)
        u = nn.functional.layer_norm(z, (self.size,), eps=self.eps)
        return u * self.weight[self.groups] + self.bias[self.groups]

    def extra_repr(self) -> str:
        return f"{self.size}, populations={self.weight.numel()}, eps={self.eps}"
