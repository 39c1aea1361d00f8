r"""Linear layer whose weights the connectome fixes up to one learnable scale per population pair.

This is flyvis's parametrisation (Lappalainen et al., Nature 2024) for a connectome projection:

.. math::
    W_{ij} = s_j \, n_{ij} \, g_{k(i,j)}, \qquad g_k = e^{\theta_k}

with :math:`s_j \in \{+1, -1\}` the Dale sign of presynaptic unit :math:`j`, :math:`n_{ij}` the
synapse count of the pair (fixed; zero where there is no connection) and :math:`k(i, j)` the
block of the pair, i.e. the (postsynaptic population, presynaptic population) pair it belongs
to. Only the :math:`\theta_k` are learned: :math:`O(\text{populations}^2)` parameters, not
:math:`O(\text{edges})`. The exponential keeps every scale positive and makes a gradient step a
relative change of the scale, whatever its magnitude.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .projection import check_sign
from .sparse_linear import EdgeListConnectivity, csr_buffers, csr_linear


class CountLinear(EdgeListConnectivity, nn.Module):
    r"""``y = x W^T``, :math:`W_{ij} = s_j n_{ij} e^{\theta_{k(i,j)}}` (module docstring).

    Args:
        in_features: presynaptic units.
        out_features: postsynaptic units.
        edge_index: ``(2, E)`` long, ``[pre, post]``; no duplicates.
        n_synapses: ``(E,)`` positive synapse count of each edge (in ``edge_index``'s order).
        block: ``(E,)`` long in ``[0, n_blocks)``: which scale each edge uses.
        n_blocks: number of learnable scales.
        sign: ``(in_features,)`` Dale sign per presynaptic unit (+1 / -1), or ``None`` (+1).
        init_scale: initial :math:`g` (a float, or ``(n_blocks,)``), > 0.
        backend: ``"dense"`` (the ``(out, in)`` matrix, rebuilt each call, and a dense matmul) or
            ``"sparse"`` (the CSR kernel of :class:`~graphnet.SparseLinear`): same outputs and
            gradients.
        block_names: a name per block (e.g. ``"23P<-4P"``), for :meth:`scales`.

    Shapes:
        - **input:** :math:`(*, \text{in})`
        - **output:** :math:`(*, \text{out})`
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        edge_index: Tensor,
        n_synapses: Tensor,
        block: Tensor,
        n_blocks: int,
        sign: Tensor | None = None,
        init_scale: float | Tensor = 1.0,
        backend: Literal["dense", "sparse"] = "sparse",
        block_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if backend not in ("dense", "sparse"):
            raise ValueError(f"backend={backend!r}; choose 'dense' or 'sparse'")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.n_blocks, self.backend = int(n_blocks), backend
        dtype = dtype or torch.get_default_dtype()
        ei = torch.as_tensor(edge_index, dtype=torch.long, device=device).reshape(2, -1)
        n = torch.as_tensor(n_synapses, dtype=torch.float64, device=device).reshape(-1)
        blk = torch.as_tensor(block, dtype=torch.long, device=device).reshape(-1)
        if not n.shape[0] == blk.shape[0] == ei.shape[1]:
            raise ValueError(f"edge_index {tuple(ei.shape)}, n_synapses {tuple(n.shape)} and "
                             f"block {tuple(blk.shape)} must agree on the number of edges")
        if ei.numel() and (ei[0].min() < 0 or ei[0].max() >= self.in_features
                           or ei[1].min() < 0 or ei[1].max() >= self.out_features):
            raise ValueError("edge_index outside (in_features, out_features)")
        if n.numel() and not bool((torch.isfinite(n) & (n > 0)).all()):
            raise ValueError("n_synapses must be finite and > 0 on every edge")
        if blk.numel() and (blk.min() < 0 or blk.max() >= self.n_blocks):
            raise ValueError(f"block indices outside [0, {self.n_blocks})")
        key = ei[1] * self.in_features + ei[0]
        order = torch.argsort(key, stable=True)
        if key.numel() and bool((key[order].diff() == 0).any()):
            raise ValueError("duplicate edges in edge_index")
        ei, n, blk = ei[:, order].contiguous(), n[order], blk[order]
        sign = check_sign(sign, self.in_features, device, torch.float64)
        s = torch.ones_like(n) if sign is None else sign[ei[0]]
        self.register_buffer("edge_index", ei)
        self.register_buffer("sign", None if sign is None else sign.to(dtype))
        self.register_buffer("base", (s * n).to(dtype))       # s_j n_ij per edge, CSR order
        self.register_buffer("block", blk)
        self.block_names = list(block_names) if block_names is not None else \
            [str(k) for k in range(self.n_blocks)]
        if len(self.block_names) != self.n_blocks:
            raise ValueError(f"{len(self.block_names)} block names for {self.n_blocks} blocks")
        for name, t in csr_buffers(ei, self.in_features, self.out_features).items():
            self.register_buffer(name, t, persistent=False)
        self.log_scale = nn.Parameter(torch.empty(self.n_blocks, device=device, dtype=dtype))
        self.reset_parameters(init_scale)

    @torch.no_grad()
    def reset_parameters(self, init_scale: float | Tensor = 1.0) -> None:
        g = torch.as_tensor(init_scale, dtype=torch.float64).expand(self.n_blocks)
        if not bool((g > 0).all()):
            raise ValueError("init_scale must be > 0")
        self.log_scale.copy_(g.log().to(self.log_scale))

    # -- weights ----------------------------------------------------------------------------
    def scale(self) -> Tensor:
        r"""``(n_blocks,)`` the learnable scales :math:`g = e^\theta`."""
        return self.log_scale.exp()

    def scales(self) -> dict[str, float]:
        """``{block name: g}``."""
        return dict(zip(self.block_names, self.scale().detach().cpu().tolist()))

    def edge_values(self) -> Tensor:
        """``(E,)`` effective weight :math:`s_j n_{ij} g_k` of each connection, CSR order."""
        return self.base * self.scale()[self.block]

    def effective_weight(self) -> Tensor:
        """The weight the layer applies in its storage: ``(out, in)`` for the dense backend,
        ``(E,)`` (CSR order) for the sparse one."""
        return self.dense_weight() if self.backend == "dense" else self.edge_values()

    def dense_weight(self) -> Tensor:
        """``(out, in)`` effective weight (zeros off the graph); differentiable."""
        w = self.base.new_zeros(self.out_features, self.in_features)
        return w.index_put((self.edge_index[1], self.edge_index[0]), self.edge_values())

    def forward(self, x: Tensor) -> Tensor:
        # x: (*, in) -> (*, out)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        if self.backend == "dense" or self.n_edges == 0:
            out = nn.functional.linear(x, self.dense_weight())
        else:
            out = csr_linear(x, self.edge_values(), self, self.out_features)
        return out.reshape(*lead, self.out_features)

    # -- connectivity (the interface of MaskedLinear / SparseLinear) --------------------------
    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"edges={self.n_edges}, density={self.density:.4f}, scales={self.n_blocks}, "
                f"backend={self.backend!r}, dale={self.sign is not None}")


def unit_variance_scale(post: np.ndarray, n_synapses: np.ndarray, post_group: np.ndarray,
                        n_out: int) -> dict[int, float]:
    r"""Initial :math:`g` per postsynaptic group: :math:`g_P = 1 / \sqrt{\overline{\sum_j
    n_{ij}^2}}`, the mean over the group's units that have inputs, so that a unit's summed
    input has about unit variance for unit-variance inputs (as the free weights' fan-in
    initialisation gives). ``post``: (E,) postsynaptic unit of each edge; ``post_group``:
    (n_out,) group code of each unit. Groups without inputs get 1."""
    post = np.asarray(post, dtype=np.int64)
    ss = np.bincount(post, weights=np.asarray(n_synapses, dtype=np.float64) ** 2, minlength=n_out)
    out: dict[int, float] = {}
    for gcode in np.unique(post_group):
        v = ss[(np.asarray(post_group) == gcode) & (ss > 0)]
        out[int(gcode)] = 1.0 / math.sqrt(float(v.mean())) if len(v) else 1.0
    return out
