r"""Compile a connectome graph and a :class:`ColumnSpec` into a PyTorch column.

Per-layer computation (layer :math:`\ell` with :math:`n_\ell` units, batch :math:`B`):

.. math::
    \mathbf{z} &= \sum_{s \in \mathrm{src}(\ell)} \mathbf{h}_s \, \big(M_{s\ell} \odot
        \mathcal{D}(W_{s\ell})\big)^{\top} + \mathbf{b}_\ell
        && \text{masked projections; the first layer's source is the dense input } \mathbf{x} \\
    \mathbf{z} &\leftarrow \mathbf{z} + \mathrm{ReLU}(\mathbf{z}) \big(M_{\ell\ell} \odot
        \mathcal{D}(W_{\ell\ell})\big)^{\top}
        && \text{if } \texttt{intra\_layer} \text{ (one extra masked step)} \\
    \mathbf{u} &= \mathrm{LayerNorm}(\mathbf{z})
        && \text{if } \texttt{layer\_norm} \text{, else } \mathbf{u} = \mathbf{z} \\
    \mathbf{u} &\leftarrow \mathbf{u} + \sigma \boldsymbol{\varepsilon},\;
        \boldsymbol{\varepsilon} \sim \mathcal{N}(0, I)
        && \text{training only, } \sigma = \texttt{noise\_std} \text{ (synaptic noise)} \\
    \mathbf{h}_\ell &= \mathbf{g}_\ell \odot \mathrm{ReLU}(\mathbf{u} - \boldsymbol{\theta}_\ell)
        && \mathbf{g}: \text{graded inhibition gain (1 if off)}, \;
           \boldsymbol{\theta}: \text{homeostatic threshold (0 if off)}

:math:`M` are the connectome masks (rows = postsynaptic cells, columns = presynaptic cells),
:math:`\mathcal{D}` Dale's sign parametrisation (:class:`~graphnet.MaskedLinear`), and the
column's output is :math:`\mathbf{h}` of the output layer (default: the last). The input from
the conv features is a plain ``nn.Linear(in_features, n_first, bias=False)``.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from connectomics.graph import ConnectomeGraph

from .backend import choose_backend
from .count_linear import CountLinear, unit_variance_scale
from .inhibition import GradedInhibition
from .masked_linear import MaskedLinear
from .null_models import NULL_MODELS
from .projection import RELU_NORMAL_MEAN, summed_weight
from .population_norm import PopulationLayerNorm
from .plasticity import HebbianRecord, HebbianRule, ThresholdRecord
from .sparse_linear import SparseLinear
from .plan import LayerPlan, ProjectionPlan, plan_column
from .spec import ColumnSpec

_INTRA = "__intra__"


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------
class ColumnLayer(nn.Module):
    r"""One layer of a :class:`CorticalColumn` (the computation is in the module docstring).

    Args:
        name: layer name.
        size: units :math:`n`.
        projections: ``{source name: module}`` (``"input"`` or a layer name), each mapping
            ``(B, n_src) -> (B, n)``.
        intra: within-layer projection ``(B, n) -> (B, n)`` or ``None``.
        layer_norm: apply ``LayerNorm(n)``.
        inhibition: :class:`GradedInhibition` or ``None``.
        noise_std: std of the training-time Gaussian noise on :math:`\mathbf{u}`.

    Initialisation (the same for every mask, so that a dense, connectome or null-model mask
    starts its units alike). Each masked projection draws magnitudes with
    :math:`\sum_j w_{ij}^2 = g^2` in expectation over the unit's *masked* fan-in :math:`n_i`
    (:func:`~graphnet.init_edge_weights`). For independent inputs of mean :math:`\mu` and
    variance :math:`v`, unit :math:`i`'s summed input :math:`z_i = \sum_j w_{ij} x_j` then has

    .. math::
        \mathrm{Var}[z_i] = v \sum_j w_{ij}^2 = v g^2, \qquad
        \mathbb{E}[z_i] = \mu \sum_j w_{ij}.

    The variance does not depend on :math:`n_i`, the mean does: with Dale's law the weights
    from excitatory cells are :math:`|w|` with :math:`\mathbb{E}|w| = \tfrac{\sqrt3}{2}
    g/\sqrt{n_i}` (uniform draws), so :math:`\mathbb{E}[z_i] \approx 0.87\, g \mu \sqrt{n_i}`:
    a dense all-excitatory fan-in of 300 starts at about 4 times the mean input of a fan-in of
    20, and the layer's units differ by their fan-in instead of by their inputs. The bias
    :math:`b_i = -\mu \sum_{s \neq \text{input}} \sum_j w^{(s)}_{ij}` removes that
    expected mean exactly, per unit, for :math:`\mu = \mathbb{E}[\mathrm{ReLU}(u)] =
    1/\sqrt{2\pi}`, :math:`u \sim \mathcal{N}(0, 1)`: what a LayerNorm'd upstream column layer
    emits at initialisation (:data:`~graphnet.projection.RELU_NORMAL_MEAN`). Then every unit
    starts with mean 0 and variance :math:`v g^2` per projection whatever its fan-in and the
    sign of its inputs. The dense ``input`` projection (zero-mean, unsigned weights) and the
    within-layer step (whose input :math:`\mathrm{ReLU}(\mathbf{z})` is not normalised) are not
    corrected. Without Dale's law :math:`\sum_j w_{ij}` is already about 0 and the bias about 0.
    """

    def __init__(self, name: str, size: int, projections: dict[str, nn.Module],
                 intra: nn.Module | None = None, layer_norm: bool = True,
                 inhibition: GradedInhibition | None = None, noise_std: float = 0.0,
                 groups: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.name = name
        self.size = int(size)
        self.projections = nn.ModuleDict(projections)
        self.intra = intra
        # groups: (n,) population code of each unit; the bias and the LayerNorm gain/shift are
        # then one per population (weights="counts"), else one per unit
        if groups is not None:
            self.register_buffer("groups", torch.as_tensor(np.asarray(groups), dtype=torch.long))
            n_params = int(self.groups.max()) + 1 if self.size else 0
        else:
            self.groups = None
            n_params = self.size
        self.bias = nn.Parameter(torch.zeros(n_params))
        if groups is not None and layer_norm:
            self.norm = PopulationLayerNorm(self.size, self.groups)
        else:
            self.norm = nn.LayerNorm(self.size) if layer_norm else nn.Identity()
        self.inhibition = inhibition if inhibition is not None else nn.Identity()
        self.noise_std = float(noise_std)
        self.register_buffer("threshold", torch.zeros(self.size))
        self.record = False      # keep the last training batch's output (homeostasis)
        self.record_pre = False  # ... and each projection's input (Hebbian updates)
        self.last_pre: dict[str, Tensor] = {}
        self.last_post: Tensor | None = None
        self.centre_bias_()

    @torch.no_grad()
    def centre_bias_(self, input_mean: float = RELU_NORMAL_MEAN) -> None:
        r"""Set the bias to :math:`-\mu \sum_{s \neq \text{input}} \sum_j w^{(s)}_{ij}` (see
        the class docstring): each unit's expected summed input from upstream column layers
        is 0 for inputs of mean ``input_mean``."""
        b = torch.zeros(self.size, dtype=self.bias.dtype, device=self.bias.device)
        for src, proj in self.projections.items():
            if src != "input":
                b -= input_mean * summed_weight(proj).to(b)
        if self.groups is not None:   # the population mean of the per-unit value
            n = torch.zeros_like(self.bias).index_add_(0, self.groups, torch.ones_like(b))
            b = torch.zeros_like(self.bias).index_add_(0, self.groups, b) / n.clamp_min(1)
        self.bias.copy_(b)

    def unit_bias(self) -> Tensor:
        """``(n,)`` the bias of every unit (a population's shared bias under ``groups``)."""
        return self.bias if self.groups is None else self.bias[self.groups]

    def reset_parameters(self) -> None:
        self.centre_bias_()
        if isinstance(self.norm, (nn.LayerNorm, PopulationLayerNorm)):
            self.norm.reset_parameters()
        self.threshold.zero_()

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        # inputs: {src: (B, n_src)} -> (B, n)
        z = self.unit_bias()
        for src, proj in self.projections.items():
            z = z + proj(inputs[src])
        if self.intra is not None:
            r = torch.relu(z)
            z = z + self.intra(r)
        u = self.norm(z)
        if self.training and self.noise_std > 0:
            u = u + self.noise_std * torch.randn_like(u)
        h = self.inhibition(torch.relu(u - self.threshold))
        if self.training and self.record:
            self.last_pre = {}
            if self.record_pre:
                self.last_pre = {s: inputs[s].detach() for s in self.projections if s != "input"}
                if self.intra is not None:
                    self.last_pre[_INTRA] = r.detach()
            self.last_post = h.detach()
        return h


class CorticalColumn(nn.Module):
    """A compiled column: ``(B, in_features) -> (B, out_features)``; see :func:`compile_column`.

    ``print(column)`` shows layers (populations, sizes, inhibition gain range) and projections
    (shape, edges, density, dense/sparse backend); ``column.summary()`` gives the same tables.
    """

    def __init__(self, spec: ColumnSpec, in_features: int, layers: dict[str, ColumnLayer],
                 plans: list[LayerPlan], projections: list[ProjectionPlan],
                 backends: dict[str, str], source: str) -> None:
        super().__init__()
        self.spec = spec
        self.in_features = int(in_features)
        self.layers = nn.ModuleDict(layers)
        self.layer_plans = {p.name: p for p in plans}
        self.projection_plans = {p.key: p for p in projections}
        self.backends = dict(backends)
        self.source = source
        self.out_features = self.layers[spec.output_layer].size
        self.rule = HebbianRule(spec.hebbian_rate, spec.homeostasis, spec.homeostatic_target,
                                spec.homeostatic_rate)

    def forward(self, x: Tensor, return_all: bool = False) -> Tensor | dict[str, Tensor]:
        # x: (B, in_features) -> (B, out_features), or {layer: (B, n_layer)}
        acts: dict[str, Tensor] = {"input": x}
        for name, layer in self.layers.items():
            acts[name] = layer({s: acts[s] for s in layer.projections})
        if return_all:
            return {k: v for k, v in acts.items() if k != "input"}
        return acts[self.spec.output_layer]

    # -- plasticity -----------------------------------------------------------------------------
    @torch.no_grad()
    def plasticity_step(self) -> dict[str, float]:
        """Hebbian (Oja) update within the masks plus homeostatic thresholds, from the activity
        recorded in the last training forward (:mod:`graphnet.plasticity`). Each switch acts
        alone: weights move when ``spec.hebbian_rate > 0``, thresholds when ``spec.homeostasis``;
        a no-op returning ``{}`` when both are off. Call it after each ``optimizer.step()``."""
        if not self.rule.active:
            return {}
        heb, thr = [], []
        for name, layer in self.layers.items():
            if layer.last_post is None:
                continue
            for src, proj in layer.projections.items():
                if src in layer.last_pre:
                    heb.append(HebbianRecord(f"{src}->{name}", proj, layer.last_pre[src], layer.last_post))
            if _INTRA in layer.last_pre:
                heb.append(HebbianRecord(f"{name}->{name}", layer.intra, layer.last_pre[_INTRA],
                                         layer.last_post))
            thr.append(ThresholdRecord(name, layer.threshold, layer.last_post))
        if not thr:
            raise RuntimeError("plasticity_step: no activity recorded; run a forward pass in "
                               "training mode (column.train()) first")
        stats = self.rule.step(heb, thr)
        for layer in self.layers.values():
            layer.last_pre, layer.last_post = {}, None
        return stats

    # -- views ----------------------------------------------------------------------------------
    def projection(self, src: str, dst: str) -> nn.Module:
        """The module of projection ``src -> dst`` (``src == dst``: the within-layer one)."""
        layer = self.layers[dst]
        if src == dst:
            if layer.intra is None:
                raise KeyError(f"layer {dst!r} has no within-layer projection")
            return layer.intra
        return layer.projections[src]

    def effective_weight(self, src: str, dst: str) -> Tensor:
        """``(n_dst, n_src)`` the matrix projection ``src -> dst`` applies (``src == dst``: the
        within-layer one; ``src="input"``: the dense input projection), with mask, Dale signs,
        synapse counts and scales resolved, for every weight scheme and backend alike. Rows are
        ``layer_plans[dst].unit_ids``, columns ``layer_plans[src].unit_ids``."""
        if src == "input":
            return self.layers[dst].projections["input"].weight
        return dense_effective_weight(self.projection(src, dst))

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part: the dense ``input`` projection (features, not cells),
        the connectome ``projections`` (per edge for ``weights="free"``, per population pair for
        ``"counts"``), and the ``layers``' own (biases, LayerNorm)."""
        first = next(iter(self.layers.values()))
        inp = trainable_parameters(first.projections["input"])
        proj = sum(trainable_parameters(layer.projections[s]) for layer in self.layers.values()
                   for s in layer.projections if s != "input")
        proj += sum(trainable_parameters(layer.intra) for layer in self.layers.values()
                    if layer.intra is not None)
        total = trainable_parameters(self)
        return {"input": inp, "projections": proj, "layers": total - inp - proj, "total": total}

    def summary(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(layers, projections)`` tables.

        A layer's ``populations`` names each population once with its number of units
        (``"4P|L2/3 (55), 4P|L4 (211)"`` on the real column), in
        :meth:`LayerPlan.display_order`: the units keep their node order in the layer, the
        table groups them.
        """
        lrows = []
        for name, layer in self.layers.items():
            shown = self.layer_plans[name].display_order()
            gain = layer.inhibition.gain if isinstance(layer.inhibition, GradedInhibition) else None
            lrows.append({
                "layer": name, "units": layer.size,
                "inhibition_gain": "off" if gain is None else
                f"{float(gain.min()):.2f}-{float(gain.max()):.2f}",
                "output": name == self.spec.output_layer,
                "populations": ", ".join(f"{a} ({b})" for a, b in zip(shown.populations, shown.sizes)),
            })
        prows = [{"projection": f"input->{next(iter(self.layers))}",
                  "shape": f"{self.layers[next(iter(self.layers))].size}x{self.in_features}",
                  "edges": self.in_features * self.layers[next(iter(self.layers))].size,
                  "density": 1.0, "backend": "dense (nn.Linear)"}]
        for key, pp in self.projection_plans.items():
            mod = self.projection(pp.src, pp.dst)
            prows.append({"projection": key + (" (intra)" if pp.src == pp.dst else ""),
                          "shape": f"{pp.n_dst}x{pp.n_src}", "edges": mod.n_edges,
                          "density": round(mod.density, 4), "backend": self.backends[key]})
        return pd.DataFrame(lrows), pd.DataFrame(prows)

    def __repr__(self) -> str:
        lt, pt = self.summary()
        s = self.spec
        switches = (f"weights={s.weights}, populations={s.populations}, "
                    f"mask={s.mask}, intra_layer={s.intra_layer}, dale={s.dale}, "
                    f"graded_inhibition={s.graded_inhibition}, layer_norm={s.layer_norm}, "
                    f"noise_std={s.noise_std}, hebbian_rate={s.hebbian_rate}, "
                    f"homeostasis={s.homeostasis}, min_synapses={s.min_synapses}, "
                    f"weight_init={s.weight_init}, seed={s.seed}")
        c = self.parameter_counts()
        return (f"CorticalColumn(spec={s.name!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, source={self.source}, "
                f"parameters={c['total']:,}: input {c['input']:,}, connectome projections "
                f"{c['projections']:,}, layers {c['layers']:,})\n  {switches}\n"
                + _indent(_left_aligned(lt, "populations")) + "\n" + _indent(pt.to_string(index=False)))

    # -- export ---------------------------------------------------------------------------------
    @torch.no_grad()
    def connection_table(self) -> pd.DataFrame:
        """One row per connection of every compiled projection (within-layer ones included):
        ``pre``, ``post`` (the graph's node indices), ``n_synapses``, ``summed_size`` (of the
        compiled, possibly null-model, graph), ``projection`` and ``weight``, the effective
        weight the column applies now (mask, Dale sign, counts and scales resolved)."""
        parts = []
        for key, pp in self.projection_plans.items():
            src_ids = np.asarray(self.layer_plans[pp.src].unit_ids)
            dst_ids = np.asarray(self.layer_plans[pp.dst].unit_ids)
            w = self.effective_weight(pp.src, pp.dst).detach().cpu().double().numpy()
            parts.append(pd.DataFrame({
                "pre": src_ids[pp.pre], "post": dst_ids[pp.post],
                "n_synapses": np.asarray(pp.n_synapses, dtype=np.float64),
                "summed_size": np.asarray(pp.summed_size, dtype=np.float64),
                "projection": key, "weight": w[pp.post, pp.pre]}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["pre", "post", "n_synapses", "summed_size", "projection", "weight"])

    @torch.no_grad()
    def to_networkx(self) -> nx.DiGraph:
        """The compiled connectivity as a networkx ``DiGraph``.

        Nodes: the graph's node indices (type-level source: ``"<population>#k"``), with
        ``cell_type, mtype, layer, ei, root_id`` (neuron-level), ``column_layer`` and ``unit``.
        Edges ``pre -> post`` for every connection of every compiled projection, with
        ``n_synapses``, ``summed_size``, ``projection`` and the current effective ``weight``.
        """
        g = nx.DiGraph()
        for name, p in self.layer_plans.items():
            for k, (uid, a) in enumerate(zip(p.unit_ids, p.unit_attrs)):
                g.add_node(uid, **a, column_layer=name, unit=k)
        for key, pp in self.projection_plans.items():
            mod = self.projection(pp.src, pp.dst)
            src_ids, dst_ids = self.layer_plans[pp.src].unit_ids, self.layer_plans[pp.dst].unit_ids
            ei = mod.connections().cpu().numpy()
            vals = mod.edge_values().cpu().numpy()
            weight = {(int(a), int(b)): float(v) for a, b, v in zip(ei[0], ei[1], vals)}
            for a, b, ns, sz in zip(pp.pre, pp.post, pp.n_synapses, pp.summed_size):
                g.add_edge(src_ids[a], dst_ids[b], n_synapses=int(ns), summed_size=float(sz),
                           projection=key, weight=weight[(int(a), int(b))])
        return g


def trainable_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``, a :class:`MaskedLinear`'s weight counted by its
    connections (its masked entries are stored but never change)."""
    total = 0
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                total += m.n_edges if isinstance(m, MaskedLinear) and name == "weight" else p.numel()
    return total


def dense_effective_weight(proj: nn.Module) -> Tensor:
    """``(out, in)`` effective weight of a :class:`MaskedLinear`, :class:`SparseLinear` or
    :class:`CountLinear` (zeros where there is no connection)."""
    if isinstance(proj, (SparseLinear, CountLinear)):
        return proj.dense_weight()
    if isinstance(proj, MaskedLinear):
        return proj.effective_weight()
    if isinstance(proj, nn.Linear):
        return proj.weight
    raise TypeError(f"no effective weight for {type(proj).__name__}")


def _indent(s: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in s.splitlines())


def _left_aligned(table: pd.DataFrame, column: str) -> str:
    """``table`` as text with ``column`` (a long list of names) left-aligned under its header."""
    width = max([len(column), *map(len, table[column].astype(str))])
    text = table.to_string(index=False, formatters={column: f"{{:<{width}}}".format})
    header, _, body = text.partition("\n")
    # pandas right-aligns the header over the padded entries: move it left with them
    start = header.index(column) - (width - len(column))
    header = header[:start] + column.ljust(width) + header[start + width:]
    return "\n".join(line.rstrip() for line in (header + "\n" + body).splitlines())


# ------------------------------------------------------------------------------------------------
# compiler
# ------------------------------------------------------------------------------------------------
def count_module(pre: np.ndarray, post: np.ndarray, n_synapses: np.ndarray, n_src: int,
                 n_dst: int, src_groups: np.ndarray, dst_groups: np.ndarray,
                 sign: np.ndarray | None, backend: str, device=None, dtype=None) -> CountLinear:
    """A :class:`CountLinear` with one scale per (post population, pre population) pair that has
    connections, named ``"<post>-><pre>"`` reversed as ``"<pre>-><post>"``, each initialised to
    :func:`~graphnet.count_linear.unit_variance_scale` of its postsynaptic population."""
    keys = [f"{a}->{b}" for a, b in zip(src_groups[pre], dst_groups[post])]
    block, names = pd.factorize(pd.Series(keys, dtype=object), sort=True)
    post_codes, _ = pd.factorize(pd.Series(dst_groups, dtype=object), sort=True)
    per_post = unit_variance_scale(post, n_synapses, post_codes, n_dst)
    first_post = {int(k): int(post_codes[post[np.flatnonzero(block == k)[0]]]) for k in range(len(names))}
    init = torch.tensor([per_post[first_post[k]] for k in range(len(names))], dtype=torch.float64)
    return CountLinear(n_src, n_dst, torch.as_tensor(np.stack([pre, post])), torch.as_tensor(n_synapses),
                       torch.as_tensor(block), len(names),
                       sign=None if sign is None else torch.as_tensor(sign), init_scale=init,
                       backend=backend, block_names=[str(n) for n in names], device=device, dtype=dtype)


def _projection_module(pp: ProjectionPlan, spec: ColumnSpec, src: LayerPlan, dst: LayerPlan,
                       backend: str, gen: torch.Generator, device, dtype) -> nn.Module:
    src_ei = src.ei
    if spec.weights == "counts":
        return count_module(pp.pre, pp.post, pp.n_synapses, pp.n_src, pp.n_dst, src.groups,
                            dst.groups, np.where(src_ei == "I", -1.0, 1.0) if spec.dale else None,
                            backend, device, dtype)
    sign = torch.as_tensor(np.where(src_ei == "I", -1.0, 1.0)) if spec.dale else None
    scale = None
    if spec.weight_init == "synapse_count":
        scale = torch.as_tensor(pp.n_synapses, dtype=torch.float32)
    elif spec.weight_init == "summed_size":
        if np.isnan(pp.summed_size).any():
            raise ValueError(
                f"weight_init='summed_size': projection {pp.key} has pairs of unknown synapse size "
                "(summed_size NaN: the graph's source has synapse counts only, like the bundled "
                "MICrONS column); use weight_init='synapse_count' or 'fan_in'")
        scale = torch.as_tensor(pp.summed_size, dtype=torch.float32)
    # order edges in CSR order (post, then pre) so dense and sparse draw the same values
    order = np.lexsort((pp.pre, pp.post))
    pre = torch.as_tensor(pp.pre[order], dtype=torch.long)
    post = torch.as_tensor(pp.post[order], dtype=torch.long)
    if scale is not None:
        scale = scale[torch.as_tensor(order)]
    if backend == "sparse":
        return SparseLinear(pp.n_src, pp.n_dst, torch.stack([pre, post]), bias=False, sign=sign,
                            scale=scale, generator=gen, device=device, dtype=dtype)
    mask = torch.zeros(pp.n_dst, pp.n_src, dtype=torch.bool)
    mask[post, pre] = True
    dense_scale = None
    if scale is not None:
        dense_scale = torch.zeros(pp.n_dst, pp.n_src)
        dense_scale[post, pre] = scale
    return MaskedLinear(pp.n_src, pp.n_dst, mask, bias=False, sign=sign, scale=dense_scale,
                        generator=gen, device=device, dtype=dtype)


def compile_column(
    graph: ConnectomeGraph | nx.DiGraph,
    spec: ColumnSpec | None = None,
    in_features: int = 1024,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> CorticalColumn:
    """Build a :class:`CorticalColumn` from a graph and a spec (default :meth:`ColumnSpec.bionic`).

    ``graph``: a neuron-level :class:`~connectomics.graph.ConnectomeGraph` (masks = observed
    pairs with at least ``spec.min_synapses`` synapses) or a type-level networkx ``DiGraph`` of
    populations (``ConnectomeGraph.type_graph``; masks sampled per block from
    ``connection_probability`` with ``spec.seed``, ``min_synapses`` not applicable). Null-model
    masks transform the graph first (:mod:`graphnet.null_models`, seeded with ``spec.seed``).
    Each projection is dense or sparse by :func:`graphnet.backend.choose_backend` for ``device``
    unless ``spec.backend`` forces one. The same graph, spec and seed give the same column.
    """
    spec = spec or ColumnSpec.bionic()
    if spec.dynamics == "recurrent":
        from .recurrent import compile_recurrent   # recurrent builds on this module's parts

        return compile_recurrent(graph, spec, in_features, device=device, dtype=dtype)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    plans, projs = plan_column(graph, spec)
    if isinstance(graph, ConnectomeGraph):
        source = "neuron graph" + (f" ({spec.mask} null model)" if spec.mask in NULL_MODELS else "")
    else:
        source = "type graph (sampled masks)"
    gen = torch.Generator().manual_seed(int(spec.seed))
    by_name = {p.name: p for p in plans}
    first = plans[0].name
    inp = nn.Linear(in_features, by_name[first].size, bias=False, device=dev, dtype=dtype)
    with torch.no_grad():
        bound = math.sqrt(3.0 / in_features)
        inp.weight.copy_((torch.rand(inp.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1)
                         * bound)
    modules: dict[str, dict[str, nn.Module]] = {p.name: {} for p in plans}
    intra: dict[str, nn.Module] = {}
    modules[first]["input"] = inp
    backends: dict[str, str] = {}
    for pp in projs:
        b = choose_backend(pp.n_dst, pp.n_src, pp.density, dev, spec.backend)
        backends[pp.key] = b
        mod = _projection_module(pp, spec, by_name[pp.src], by_name[pp.dst], b, gen, dev, dtype)
        if pp.src == pp.dst:
            intra[pp.dst] = mod
        else:
            modules[pp.dst][pp.src] = mod
    layers = {}
    for p in plans:
        inh = GradedInhibition(p.inhibitory_input, spec.inhibition_strength) \
            if spec.graded_inhibition else None
        groups = pd.factorize(pd.Series(p.groups, dtype=object), sort=True)[0] \
            if spec.weights == "counts" else None
        layer = ColumnLayer(p.name, p.size, modules[p.name], intra.get(p.name), spec.layer_norm,
                            inh, spec.noise_std, groups=groups)
        layer.record = spec.hebbian_rate > 0 or spec.homeostasis
        layer.record_pre = spec.hebbian_rate > 0
        layers[p.name] = layer
    col = CorticalColumn(spec, in_features, layers, plans, projs, backends, source)
    return col.to(device=dev, dtype=dtype) if (device is not None or dtype is not None) else col
