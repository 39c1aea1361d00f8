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
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from connectomics.graph import ConnectomeGraph, population_key

from .backend import choose_backend
from .inhibition import GradedInhibition, inhibitory_input, population_inhibitory_input
from .masked_linear import MaskedLinear
from .null_models import NULL_MODELS, TYPE_NULL_MODELS
from .projection import RELU_NORMAL_MEAN, summed_weight
from .plasticity import HebbianRecord, HebbianRule, ThresholdRecord
from .sparse_linear import SparseLinear
from .spec import ColumnSpec, LayerSpec

_INTRA = "__intra__"


# ------------------------------------------------------------------------------------------------
# plans: what the graph says, before any module is built
# ------------------------------------------------------------------------------------------------
@dataclass
class LayerPlan:
    name: str
    populations: list[str]
    population_sizes: list[int]
    unit_ids: list[Any]          # neuron-level: node indices; type-level: "<pop>#k"
    ei: np.ndarray               # (n,) "E"/"I"
    inhibitory_input: np.ndarray  # (n,)
    unit_attrs: list[dict] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.unit_ids)


@dataclass
class ProjectionPlan:
    src: str
    dst: str
    pre: np.ndarray    # (E,) local index in src
    post: np.ndarray   # (E,) local index in dst
    n_synapses: np.ndarray
    summed_size: np.ndarray
    n_src: int
    n_dst: int

    @property
    def density(self) -> float:
        return len(self.pre) / max(1, self.n_src * self.n_dst)

    @property
    def key(self) -> str:
        return f"{self.src}->{self.dst}"


def _rank(values: pd.Series, order: tuple[str, ...] | None) -> np.ndarray:
    if order is None:
        return np.zeros(len(values), dtype=np.int64)
    r = {v: i for i, v in enumerate(order)}
    return values.map(r).fillna(len(order)).to_numpy(np.int64)


def _select(nodes: pd.DataFrame, ls: LayerSpec) -> np.ndarray:
    sel = np.ones(len(nodes), dtype=bool)
    if ls.cell_types is not None:
        sel &= nodes["cell_type"].isin(ls.cell_types).to_numpy()
    if ls.layers is not None:
        sel &= nodes["layer"].isin(ls.layers).to_numpy()
    if ls.mtypes is not None:
        sel &= nodes["mtype"].isin(ls.mtypes).to_numpy()
    idx = np.flatnonzero(sel)
    sub = nodes.iloc[idx]
    order = np.lexsort((idx, _rank(sub["layer"], ls.layers), _rank(sub["mtype"], ls.mtypes),
                        _rank(sub["cell_type"], ls.cell_types)))
    return idx[order]


def _plan_neuron_graph(g: ConnectomeGraph, spec: ColumnSpec) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    nodes = g.nodes
    layer_of = np.full(g.n_nodes, -1, dtype=np.int64)
    local_of = np.full(g.n_nodes, -1, dtype=np.int64)
    plans: list[LayerPlan] = []
    for li, ls in enumerate(spec.layers):
        idx = _select(nodes, ls)
        if len(idx) == 0:
            raise ValueError(f"layer {ls.name!r}: no cells with cell_type in {ls.cell_types}, "
                             f"layer in {ls.layers}, mtype in {ls.mtypes}")
        clash = layer_of[idx] >= 0
        if clash.any():
            other = spec.layers[int(layer_of[idx[clash][0]])].name
            raise ValueError(f"layers {other!r} and {ls.name!r} share {int(clash.sum())} cell(s)")
        layer_of[idx] = li
        local_of[idx] = np.arange(len(idx))
        sub = nodes.iloc[idx]
        label = "mtype" if ls.mtypes is not None else "cell_type"  # m-type layers list m-types
        pops = population_key(sub[label], sub["layer"]).tolist()
        names, sizes = [], []
        for p in pops:
            if not names or names[-1] != p:
                names.append(p)
                sizes.append(0)
            sizes[-1] += 1
        attrs = sub[["cell_type", "mtype", "layer", "ei", "root_id"]].to_dict("records")
        plans.append(LayerPlan(
            name=ls.name, populations=names, population_sizes=sizes,
            unit_ids=[int(i) for i in idx], ei=sub["ei"].to_numpy().astype(str),
            inhibitory_input=inhibitory_input(g, idx, spec.inhibition_measure, spec.min_synapses),
            unit_attrs=attrs,
        ))
    e = g.edges[g.edges["n_synapses"] >= spec.min_synapses]
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    nsyn, size = e["n_synapses"].to_numpy(), e["summed_size"].to_numpy(float)
    lp, lq = layer_of[pre], layer_of[post]
    pairs = list(spec.projections) + ([(l.name, l.name) for l in spec.layers] if spec.intra_layer else [])
    index = {l.name: i for i, l in enumerate(spec.layers)}
    projs: list[ProjectionPlan] = []
    for src, dst in pairs:
        s, d = index[src], index[dst]
        ns, nd = plans[s].size, plans[d].size
        if spec.mask == "dense":
            q, p = np.divmod(np.arange(ns * nd), ns)   # post-major, CSR order
            if s == d:
                keep = q != p
                q, p = q[keep], p[keep]
            obs = np.zeros((nd, ns)), np.zeros((nd, ns))
            k = (lp == s) & (lq == d)
            obs[0][local_of[post[k]], local_of[pre[k]]] = nsyn[k]
            obs[1][local_of[post[k]], local_of[pre[k]]] = size[k]
            projs.append(ProjectionPlan(src, dst, p, q, obs[0][q, p], obs[1][q, p], ns, nd))
            continue
        k = (lp == s) & (lq == d)
        projs.append(ProjectionPlan(src, dst, local_of[pre[k]], local_of[post[k]], nsyn[k].astype(float),
                                    size[k], ns, nd))
    return plans, projs


def _plan_type_graph(tg: nx.DiGraph, spec: ColumnSpec) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    if spec.mask in ("degree_shuffle", "label_shuffle"):
        raise ValueError(f"mask={spec.mask!r} needs a neuron-level ConnectomeGraph")
    rng = np.random.default_rng(spec.seed)
    plans: list[LayerPlan] = []
    slices: dict[str, list[tuple[str, slice]]] = {}
    used: set[str] = set()
    for ls in spec.layers:
        if ls.mtypes is not None:
            raise ValueError(f"layer {ls.name!r}: m-type selection needs a neuron-level graph")
        pops = [n for n, d in tg.nodes(data=True)
                if (ls.cell_types is None or d["cell_type"] in ls.cell_types)
                and (ls.layers is None or d["layer"] in ls.layers)]
        ct_rank = {c: i for i, c in enumerate(ls.cell_types or ())}
        ly_rank = {c: i for i, c in enumerate(ls.layers or ())}
        pops.sort(key=lambda n: (ct_rank.get(tg.nodes[n]["cell_type"], 0),
                                 ly_rank.get(tg.nodes[n]["layer"], 0), n))
        if not pops:
            raise ValueError(f"layer {ls.name!r}: no populations match")
        if used & set(pops):
            raise ValueError(f"layer {ls.name!r} shares populations {sorted(used & set(pops))}")
        used |= set(pops)
        sizes = [int(tg.nodes[p]["n_cells"]) for p in pops]
        units, ei, inh, sl, attrs, start = [], [], [], [], [], 0
        for p, n in zip(pops, sizes):
            d = tg.nodes[p]
            c = population_inhibitory_input(tg, p, spec.inhibition_measure)
            units += [f"{p}#{k}" for k in range(n)]
            ei += [d["ei"]] * n
            inh += [c] * n
            attrs += [{"cell_type": d["cell_type"], "layer": d["layer"], "ei": d["ei"],
                       "population": p}] * n
            sl.append((p, slice(start, start + n)))
            start += n
        slices[ls.name] = sl
        plans.append(LayerPlan(ls.name, pops, sizes, units, np.array(ei), np.array(inh), attrs))
    # masks are sampled from the (null-model) graph; units and inhibition come from the graph
    sampled = TYPE_NULL_MODELS[spec.mask](tg) if spec.mask in TYPE_NULL_MODELS else tg
    index = {p.name: i for i, p in enumerate(plans)}
    pairs_ = list(spec.projections) + ([(l.name, l.name) for l in spec.layers] if spec.intra_layer else [])
    projs = []
    for src, dst in pairs_:
        ns, nd = plans[index[src]].size, plans[index[dst]].size
        m = np.zeros((nd, ns), dtype=bool)
        syn = np.zeros((nd, ns))
        ssz = np.zeros((nd, ns))
        for P, sp in slices[src]:
            for Q, sq in slices[dst]:
                ed = sampled.edges[P, Q] if sampled.has_edge(P, Q) else None
                if spec.mask == "dense":
                    p = 1.0
                else:  # connectome, or the random null model's uniform probability
                    p = float(ed["connection_probability"]) if ed is not None else 0.0
                blk = rng.random((sq.stop - sq.start, sp.stop - sp.start)) < p
                if P == Q:
                    np.fill_diagonal(blk, False)
                m[sq, sp] = blk
                if ed is not None and ed.get("connected_pairs", 0):
                    syn[sq, sp] = ed["synapses_per_connection"]
                    ssz[sq, sp] = ed["summed_size"] / ed["connected_pairs"]
        q, p = np.nonzero(m)
        projs.append(ProjectionPlan(src, dst, p, q, syn[q, p], ssz[q, p], ns, nd))
    return plans, projs


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
                 inhibition: GradedInhibition | None = None, noise_std: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.size = int(size)
        self.projections = nn.ModuleDict(projections)
        self.intra = intra
        self.bias = nn.Parameter(torch.zeros(self.size))
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
        b = torch.zeros_like(self.bias)
        for src, proj in self.projections.items():
            if src != "input":
                b -= input_mean * summed_weight(proj).to(b)
        self.bias.copy_(b)

    def reset_parameters(self) -> None:
        self.centre_bias_()
        if isinstance(self.norm, nn.LayerNorm):
            self.norm.reset_parameters()
        self.threshold.zero_()

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        # inputs: {src: (B, n_src)} -> (B, n)
        z = self.bias
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

    def summary(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(layers, projections)`` tables."""
        lrows = []
        for name, layer in self.layers.items():
            p = self.layer_plans[name]
            gain = layer.inhibition.gain if isinstance(layer.inhibition, GradedInhibition) else None
            lrows.append({
                "layer": name, "populations": ", ".join(f"{a} ({b})" for a, b in
                                                        zip(p.populations, p.population_sizes)),
                "units": layer.size,
                "inhibition_gain": "off" if gain is None else
                f"{float(gain.min()):.2f}-{float(gain.max()):.2f}",
                "output": name == self.spec.output_layer,
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
        switches = (f"mask={s.mask}, intra_layer={s.intra_layer}, dale={s.dale}, "
                    f"graded_inhibition={s.graded_inhibition}, layer_norm={s.layer_norm}, "
                    f"noise_std={s.noise_std}, hebbian_rate={s.hebbian_rate}, "
                    f"homeostasis={s.homeostasis}, min_synapses={s.min_synapses}, "
                    f"weight_init={s.weight_init}, seed={s.seed}")
        n_params = sum(p.numel() for p in self.parameters())
        return (f"CorticalColumn(spec={s.name!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, source={self.source}, "
                f"parameters={n_params:,})\n  {switches}\n"
                + _indent(lt.to_string(index=False)) + "\n" + _indent(pt.to_string(index=False)))

    # -- export ---------------------------------------------------------------------------------
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


def _indent(s: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in s.splitlines())


# ------------------------------------------------------------------------------------------------
# compiler
# ------------------------------------------------------------------------------------------------
def _projection_module(pp: ProjectionPlan, spec: ColumnSpec, src_ei: np.ndarray, backend: str,
                       gen: torch.Generator, device, dtype) -> nn.Module:
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


def plan_column(graph: ConnectomeGraph | nx.DiGraph,
                spec: ColumnSpec | None = None) -> tuple[list[LayerPlan], list[ProjectionPlan]]:
    """The layers (units, E/I, inhibitory input) and projections (edge lists) a column of ``spec``
    has on ``graph``, with the null-model transform applied: what :func:`compile_column` builds,
    before any weight exists (for inspecting masks: fan-ins, edge counts)."""
    spec = spec or ColumnSpec.bionic()
    if isinstance(graph, ConnectomeGraph):
        if spec.mask in NULL_MODELS:
            graph = NULL_MODELS[spec.mask](graph, seed=spec.seed)
        return _plan_neuron_graph(graph, spec)
    if isinstance(graph, nx.DiGraph):
        return _plan_type_graph(graph, spec)
    raise TypeError(f"graph must be a ConnectomeGraph or a networkx DiGraph, got {type(graph)}")


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
        mod = _projection_module(pp, spec, by_name[pp.src].ei, b, gen, dev, dtype)
        if pp.src == pp.dst:
            intra[pp.dst] = mod
        else:
            modules[pp.dst][pp.src] = mod
    layers = {}
    for p in plans:
        inh = GradedInhibition(p.inhibitory_input, spec.inhibition_strength) \
            if spec.graded_inhibition else None
        layer = ColumnLayer(p.name, p.size, modules[p.name], intra.get(p.name), spec.layer_norm,
                            inh, spec.noise_std)
        layer.record = spec.hebbian_rate > 0 or spec.homeostasis
        layer.record_pre = spec.hebbian_rate > 0
        layers[p.name] = layer
    col = CorticalColumn(spec, in_features, layers, plans, projs, backends, source)
    return col.to(device=dev, dtype=dtype) if (device is not None or dtype is not None) else col
