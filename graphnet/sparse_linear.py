"""Sparse linear layer: one learnable weight per edge of a fixed graph."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch_geometric.nn.conv import MessagePassing

from .masked_linear import MaskedLinear
from .projection import SignedProjection, check_scale, init_edge_weights


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    # torch warns that CSR support is "beta"; the ops used here are tested against MaskedLinear
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def csr_buffers(edge_index: Tensor, in_features: int, out_features: int) -> dict[str, Tensor]:
    """The index tensors :class:`_CSRLinearFunction` needs for a ``(2, E)`` ``[pre, post]``
    edge list already in CSR order (by post, then pre): ``crow``/``col`` of ``A`` (rows = post)
    and ``perm_t``/``crow_t``/``col_t`` of ``A^T`` (``perm_t`` maps ``A^T``'s values to ``A``'s)."""
    pre, post = edge_index[0], edge_index[1]
    dev = edge_index.device
    counts = torch.bincount(post, minlength=out_features)
    crow = torch.zeros(out_features + 1, dtype=torch.long, device=dev)
    crow[1:] = counts.cumsum(0)
    perm_t = torch.argsort(pre * out_features + post, stable=True)
    counts_t = torch.bincount(pre, minlength=in_features)
    crow_t = torch.zeros(in_features + 1, dtype=torch.long, device=dev)
    crow_t[1:] = counts_t.cumsum(0)
    return {"crow": crow, "col": pre.clone(), "perm_t": perm_t, "crow_t": crow_t,
            "col_t": post[perm_t].contiguous()}


def csr_linear(x: Tensor, values: Tensor, buffers: dict[str, Tensor] | object, out_features: int) -> Tensor:
    """``x A^T`` for the CSR matrix ``A`` with ``values`` (E,) on the pattern of ``buffers``
    (:func:`csr_buffers`, or a module holding them as attributes): ``(B, in) -> (B, out)``,
    differentiable in ``x`` and ``values``."""
    get = buffers.__getitem__ if isinstance(buffers, dict) else lambda k: getattr(buffers, k)
    return _CSRLinearFunction.apply(x, values, get("crow"), get("col"), get("perm_t"),
                                    get("crow_t"), get("col_t"), out_features)


class _CSRLinearFunction(torch.autograd.Function):
    """``out = x A^T`` with ``A`` the ``(n_out, n_in)`` CSR matrix of edge weights ``w``.

    backward: ``grad_x = grad_out A`` (CSR of ``A^T``), ``grad_w = (grad_out^T x)`` sampled at the
    edges (``torch.sparse.sampled_addmm``), so neither pass materialises a ``(B, E)`` tensor.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, crow: Tensor, col: Tensor, perm_t: Tensor,
                crow_t: Tensor, col_t: Tensor, n_out: int) -> Tensor:
        # x: (B, n_in), w: (E,) -> (B, n_out)
        n_in = x.shape[1]
        ctx.save_for_backward(x, w, crow, col, perm_t, crow_t, col_t)
        ctx.shape = (n_out, n_in)
        A = _csr(crow, col, w, (n_out, n_in))
        return (A @ x.t().contiguous()).t()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, w, crow, col, perm_t, crow_t, col_t = ctx.saved_tensors
        n_out, n_in = ctx.shape
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            At = _csr(crow_t, col_t, w[perm_t], (n_in, n_out))
            grad_x = (At @ grad_out.t().contiguous()).t()
        if ctx.needs_input_grad[1]:
            pattern = _csr(crow, col, w.detach(), (n_out, n_in))
            grad_w = torch.sparse.sampled_addmm(
                pattern, grad_out.t().contiguous(), x.contiguous(), beta=0.0).values()
        return grad_x, grad_w, None, None, None, None, None, None


class EdgeListConnectivity:
    """Connectivity read from an ``edge_index`` buffer (``(2, E)``, rows ``[pre, post]``, CSR
    order) of a layer with ``in_features`` inputs and ``out_features`` outputs."""

    edge_index: Tensor
    in_features: int
    out_features: int

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def density(self) -> float:
        return self.n_edges / max(1, self.in_features * self.out_features)

    @property
    def fan_in(self) -> Tensor:
        """``(out,)`` connections onto each output unit."""
        return torch.bincount(self.edge_index[1], minlength=self.out_features)

    @property
    def mask(self) -> Tensor:
        """``(out, in)`` bool connectivity (materialised; for inspection and export)."""
        m = torch.zeros(self.out_features, self.in_features, dtype=torch.bool,
                        device=self.edge_index.device)
        m[self.edge_index[1], self.edge_index[0]] = True
        return m

    def connections(self) -> Tensor:
        """``(2, E)`` connections ``[pre, post]`` in CSR order (= ``edge_index``)."""
        return self.edge_index


class SparseLinear(EdgeListConnectivity, SignedProjection, MessagePassing):
    r"""Linear map over a fixed bipartite graph, one learnable weight per edge.

    .. math::
        y_{b,i} = \sum_{j \in \mathcal{N}(i)} \mathcal{D}(w_{ji}) \, x_{b,j} + b_i,
        \qquad \mathcal{D}(w_{ji}) = s_j |w_{ji}| \text{ if } s_j \neq 0 \text{ else } w_{ji}

    where :math:`\mathcal{N}(i)` are the presynaptic units of postsynaptic unit :math:`i`
    (``edge_index[0]`` = pre/source, ``edge_index[1]`` = post/target, PyG's
    ``source_to_target`` flow) and :math:`s_j` the optional Dale sign of unit :math:`j`.
    The same connectivity, parametrisation and initialisation as :class:`MaskedLinear` with
    ``mask[i, j] = 1`` for every edge ``j -> i``: given the same weights it gives the same
    outputs and gradients (:meth:`from_masked`, :meth:`to_masked`).

    Two kernels, same maths:

    * ``impl="csr"`` (default): PyG's fused ``message_and_aggregate`` on the transposed CSR
      adjacency: a ``torch.sparse`` CSR matmul forward and ``A^T`` / ``sampled_addmm`` backward
      (memory :math:`O(E + B(n_{in} + n_{out}))`);
    * ``impl="scatter"``: PyG gather/scatter message passing (``message = w x_j``,
      ``aggr="add"``; memory :math:`O(E B)`), kept as a reference.

    Edges are stored sorted by (post, pre) (CSR order); duplicate edges are an error.

    Args:
        in_features: presynaptic units.
        out_features: postsynaptic units.
        edge_index: ``(2, E)`` long, ``[pre, post]``.
        bias: learn an additive bias.
        sign: ``(in_features,)`` Dale sign per presynaptic unit, or ``None``.
        scale: ``(E,)`` initial magnitude scale per edge (in ``edge_index``'s given order).
        gain: target output std for unit-variance inputs.
        generator: random generator for the initial weights.
        impl: ``"csr"`` or ``"scatter"``.

    Shapes:
        - **input:** :math:`(B, \text{in})`
        - **output:** :math:`(B, \text{out})`
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        edge_index: Tensor,
        bias: bool = True,
        sign: Tensor | None = None,
        scale: Tensor | None = None,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
        impl: Literal["csr", "scatter"] = "csr",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(aggr="add", flow="source_to_target", node_dim=0)
        if impl not in ("csr", "scatter"):
            raise ValueError(f"impl={impl!r}; choose 'csr' or 'scatter'")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.gain = float(gain)
        self.impl = impl
        ei = torch.as_tensor(edge_index, dtype=torch.long, device=device).reshape(2, -1)
        if ei.numel() and (ei[0].min() < 0 or ei[0].max() >= self.in_features
                           or ei[1].min() < 0 or ei[1].max() >= self.out_features):
            raise ValueError("edge_index outside (in_features, out_features)")
        key = ei[1] * self.in_features + ei[0]
        order = torch.argsort(key, stable=True)
        if key.numel() and bool((key[order].diff() == 0).any()):
            raise ValueError("duplicate edges in edge_index")
        ei = ei[:, order].contiguous()
        self.register_buffer("edge_index", ei)
        self._register_sign(sign, device, dtype)
        scale = check_scale(scale, (ei.shape[1],), "edges", device)
        self.register_buffer("scale", None if scale is None else scale[order], persistent=False)
        self._build_csr()
        self.weight = nn.Parameter(torch.empty(ei.shape[1], device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(self.out_features, device=device, dtype=dtype)) \
            if bias else None
        self.register_load_state_dict_post_hook(SparseLinear._after_load)
        self.reset_parameters(generator)

    def _build_csr(self) -> None:
        for name, t in csr_buffers(self.edge_index, self.in_features, self.out_features).items():
            self.register_buffer(name, t, persistent=False)

    @staticmethod
    def _after_load(module: "SparseLinear", incompatible_keys) -> None:
        module._build_csr()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        super().reset_parameters()
        pre, post = self.edge_index
        w = init_edge_weights(
            post, self.out_features, scale=self.scale,
            sign=None if self.sign is None else self.sign[pre],
            gain=self.gain, generator=generator, dtype=self.weight.dtype,
        )
        self.weight.copy_(w)
        if self.bias is not None:
            self.bias.zero_()

    # -- forward --------------------------------------------------------------------------------
    def weight_sign(self) -> Tensor | None:
        """``(E,)`` Dale sign of each edge's presynaptic unit, in CSR order."""
        return None if self.sign is None else self.sign[self.edge_index[0]]

    def effective_weight(self) -> Tensor:
        """``(E,)`` weights the layer applies (Dale sign included), in CSR order."""
        return self.signed_weight()

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, in) -> (B, out)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)
        w = self.effective_weight()
        if w.numel() == 0:
            out = x.new_zeros(x.shape[0], self.out_features) + 0.0 * (x.sum() + w.sum())
        elif self.impl == "csr":
            # PyG's fused path: a sparse adjacency (rows = post) goes to message_and_aggregate
            adj_t = _csr(self.crow, self.col, w.detach(), (self.out_features, self.in_features))
            out = self.propagate(adj_t, x=x.t(), edge_weight=w).t()
        else:
            out = self.propagate(self.edge_index, x=(x.t(), None), edge_weight=w,
                                 size=(self.in_features, self.out_features)).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, self.out_features)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        # x_j: (E, B), edge_weight: (E,) -> (E, B)
        return edge_weight.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, edge_weight: Tensor) -> Tensor:
        # adj_t: (out, in) CSR pattern, x: (in, B), edge_weight: (E,) in CSR order -> (out, B).
        # The product runs through _CSRLinearFunction so the gradient reaches edge_weight
        # without materialising a (B, E) tensor.
        return _CSRLinearFunction.apply(x.t(), edge_weight, adj_t.crow_indices(), adj_t.col_indices(),
                                        self.perm_t, self.crow_t, self.col_t, self.out_features).t()

    # -- connectivity ---------------------------------------------------------------------------
    def edge_values(self) -> Tensor:
        """``(E,)`` effective weight of each connection, in :meth:`connections` order."""
        return self.effective_weight()

    def dense_weight(self) -> Tensor:
        """``(out, in)`` effective weight as a dense matrix (zeros off the graph); differentiable."""
        w = torch.zeros(self.out_features, self.in_features, dtype=self.weight.dtype,
                        device=self.weight.device)
        return w.index_put((self.edge_index[1], self.edge_index[0]), self.effective_weight())

    # -- conversions ----------------------------------------------------------------------------
    @classmethod
    def from_masked(cls, m: MaskedLinear, impl: Literal["csr", "scatter"] = "csr") -> "SparseLinear":
        """A sparse layer with ``m``'s connectivity, Dale signs, and current weights."""
        rows, cols = m.mask.nonzero(as_tuple=True)
        s = cls(m.in_features, m.out_features, torch.stack([cols, rows]), bias=m.bias is not None,
                sign=m.sign, gain=m.gain, impl=impl, device=m.weight.device, dtype=m.weight.dtype)
        with torch.no_grad():
            s.weight.copy_(m.weight[rows, cols])  # rows, cols already in CSR order
            if m.bias is not None:
                s.bias.copy_(m.bias)
        return s

    def to_masked(self) -> MaskedLinear:
        """A :class:`MaskedLinear` with this layer's connectivity, signs and current weights."""
        m = MaskedLinear(self.in_features, self.out_features, self.mask, bias=self.bias is not None,
                         sign=self.sign, gain=self.gain, device=self.weight.device,
                         dtype=self.weight.dtype)
        with torch.no_grad():
            m.weight.zero_()
            m.weight[self.edge_index[1], self.edge_index[0]] = self.weight
            if self.bias is not None:
                m.bias.copy_(self.bias)
        return m

    # -- plasticity interface (see graphnet.plasticity) -------------------------------------------
    def outer_mean(self, y: Tensor, x: Tensor) -> Tensor:
        """``<y_i x_j>`` over the batch at each edge: ``(B, out), (B, in) -> (E,)``."""
        if self.n_edges == 0:
            return y.new_zeros(0)
        pattern = _csr(self.crow, self.col, self.weight.detach(), (self.out_features, self.in_features))
        return torch.sparse.sampled_addmm(pattern, y.t().contiguous(), x.contiguous(), beta=0.0,
                                          alpha=1.0 / y.shape[0]).values()

    def expand_post(self, v: Tensor) -> Tensor:
        return v[self.edge_index[1]]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", impl={self.impl!r}"

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.extra_repr()})"
