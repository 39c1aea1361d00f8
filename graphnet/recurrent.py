r"""The whole column as one recurrent, leaky rate network of its excitatory and inhibitory cells.

Every signed cell of the graph (:func:`graphnet.plan.plan_network`) is a unit with state
:math:`x_i` (a membrane-potential-like variable) and rate :math:`r_i = \mathrm{ReLU}(x_i)`:

.. math::
    \tau_{P(i)} \frac{dx_i}{dt} = -x_i + \sum_j W_{ij} r_j + b_{P(i)} + I_i

integrated by explicit Euler for ``steps`` steps of ``dt`` from :math:`x = 0`,

.. math::
    x \leftarrow x + \frac{dt}{\tau_P} \big(-x + W r + b_P + I\big)
    \;(+\; \sigma \sqrt{dt/\tau_P}\, \varepsilon \text{ in training}),

with :math:`W` over the whole connectome (E->E, E->I, I->E, I->I) from the weight scheme
(``"counts"``: :math:`W_{ij} = s_j n_{ij} g_{P(i)P(j)}`, :class:`~graphnet.CountLinear`;
``"free"``: one learnable, Dale-signed weight per connection; ``"dense"``: every pair),
:math:`\tau_P = dt + e^{\vartheta_P}` (so :math:`dt/\tau_P < 1`: the Euler step never
overshoots) and :math:`b_P` learnable per population, and the input
:math:`I = \mathbf{x}_{\text{features}} W_{\text{in}}^\top` on the cells of the spec's first
layer only (e.g. 4P). The output is the rates of the output layer's cells (e.g. 23P and 5P)
averaged over the last ``readout_steps`` steps, LayerNorm'd without affine parameters when
``layer_norm``. :math:`W` starts scaled to spectral radius ``init_radius``.

Unstable dynamics stop the forward pass: a non-finite state, or one beyond
:data:`RATE_LIMIT`, raises :class:`DynamicsDiverged` naming the step and the population.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from connectomics.graph import ConnectomeGraph

from .backend import choose_backend
from .column import count_module, dense_effective_weight, trainable_parameters
from .masked_linear import MaskedLinear
from .null_models import NULL_MODELS
from .plan import NetworkPlan, _select, plan_network
from .sparse_linear import SparseLinear
from .spectral import spectral_radius
from .spec import ColumnSpec

#: |x| above this (or a non-finite x) is taken as exploding dynamics.
RATE_LIMIT = 1e4


class DynamicsDiverged(FloatingPointError):
    """The recurrent column's state became non-finite or exploded (message: step, population)."""


class RecurrentColumn(nn.Module):
    """A compiled recurrent column (module docstring): ``(B, in_features) -> (B, out_features)``.

    Args:
        spec: the :class:`ColumnSpec` (``dynamics="recurrent"``).
        in_features: size of the feature vector that drives the input cells.
        plan: the network's units and connections (:func:`graphnet.plan.plan_network`).
        recurrent: the ``(n, n)`` projection module (``CountLinear`` / ``MaskedLinear`` /
            ``SparseLinear``), rows and columns in ``plan``'s unit order.
        drive_units: ``(k,)`` units that receive the input.
        readout_units: ``(m,)`` units read out.
        backend: ``"dense"`` or ``"sparse"`` (of ``recurrent``), for the summary.
        source: a phrase naming the graph (for the summary).
    """

    def __init__(self, spec: ColumnSpec, in_features: int, plan: NetworkPlan, recurrent: nn.Module,
                 drive_units: np.ndarray, readout_units: np.ndarray, backend: str, source: str,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.spec, self.plan, self.backend, self.source = spec, plan, backend, source
        self.in_features = int(in_features)
        self.n_units = plan.size
        self.out_features = len(readout_units)
        self.steps, self.dt, self.readout_steps = int(spec.steps), float(spec.dt), int(spec.readout_steps)
        self.noise_std = float(spec.noise_std)
        self.inp = nn.Linear(self.in_features, len(drive_units), bias=False)
        with torch.no_grad():
            bound = math.sqrt(3.0 / self.in_features)
            self.inp.weight.copy_((torch.rand(self.inp.weight.shape, generator=generator,
                                              dtype=torch.float64) * 2 - 1) * bound)
        self.recurrent = recurrent
        n_pop = len(plan.population_names)
        self.register_buffer("population", torch.as_tensor(plan.population, dtype=torch.long))
        self.register_buffer("drive_units", torch.as_tensor(drive_units, dtype=torch.long))
        self.register_buffer("readout_units", torch.as_tensor(readout_units, dtype=torch.long))
        # tau = dt + exp(log_tau_excess); starts at tau = 1
        self.log_tau_excess = nn.Parameter(torch.full((n_pop,), math.log(1.0 - self.dt)
                                                      if self.dt < 1 else 0.0))
        self.bias = nn.Parameter(torch.zeros(n_pop))
        self.norm = nn.LayerNorm(self.out_features, elementwise_affine=False) if spec.layer_norm \
            else nn.Identity()

    # -- parameters -----------------------------------------------------------------------------
    def tau(self) -> Tensor:
        """``(P,)`` time constant of each population (units of the initial tau), > dt."""
        return self.dt + self.log_tau_excess.exp()

    def weight(self) -> Tensor:
        """``(n, n)`` the effective recurrent weight W (rows post, columns pre)."""
        return dense_effective_weight(self.recurrent)

    @torch.no_grad()
    def scale_to_radius_(self, radius: float) -> float:
        """Scale W so its spectral radius is ``radius``; returns the factor applied."""
        rho = spectral_radius(self.weight())
        if rho == 0:
            return 1.0
        factor = radius / rho
        rec = self.recurrent
        if hasattr(rec, "log_scale"):
            rec.log_scale.add_(math.log(factor))
        else:
            rec.weight.mul_(factor)
        return factor

    # -- dynamics -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        # x: (B, in_features) -> (B, out_features)
        B = x.shape[0]
        pop = self.population
        drive = x.new_zeros(B, self.n_units).index_copy(1, self.drive_units, self.inp(x))
        alpha = (self.dt / self.tau())[pop]                  # (n,)
        const = self.bias[pop] + drive                       # (B, n)
        state = x.new_zeros(B, self.n_units)
        acc = x.new_zeros(B, self.out_features)
        peaks = []
        for t in range(self.steps):
            rate = torch.relu(state)
            state = state + alpha * (self.recurrent(rate) - state + const)
            if self.training and self.noise_std > 0:
                state = state + self.noise_std * alpha.sqrt() * torch.randn_like(state)
            peaks.append(state.detach().abs().amax(0))
            if t >= self.steps - self.readout_steps:
                acc = acc + torch.relu(state).index_select(1, self.readout_units)
        self._check(torch.stack(peaks))
        return self.norm(acc / self.readout_steps)

    def _check(self, peaks: Tensor) -> None:
        # peaks: (steps, n) max |x| over the batch; one host sync per forward
        bad = ~torch.isfinite(peaks) | (peaks > RATE_LIMIT)
        if not bool(bad.any()):
            return
        step = int(bad.any(1).nonzero()[0])
        row = torch.nan_to_num(peaks[step], nan=float("inf"))
        unit = int(row.argmax())
        pop = self.plan.population_names[int(self.population[unit])]
        value = float(peaks[step, unit])
        raise DynamicsDiverged(
            f"recurrent column diverged at Euler step {step + 1} of {self.steps}: population "
            f"{pop} reached |x| = {value:.3g} (limit {RATE_LIMIT:g}); lower the learning rate, "
            f"init_radius (now {self.spec.init_radius}) or dt (now {self.dt})")

    def plasticity_step(self) -> dict[str, float]:
        """The recurrent column has no Hebbian or homeostatic plasticity (a no-op)."""
        return {}

    # -- views ----------------------------------------------------------------------------------
    def effective_weight(self, src: str = "all", dst: str = "all") -> Tensor:
        """``(n_dst, n_src)`` block of W from the cells of population ``src`` to those of ``dst``
        (a population label of the plan's grouping, or ``"all"``; ``src="input"``: the input
        projection onto the drive cells)."""
        if src == "input":
            return self.inp.weight
        w = self.weight()
        rows = slice(None) if dst == "all" else torch.as_tensor(self.plan.units_of([dst]))
        cols = slice(None) if src == "all" else torch.as_tensor(self.plan.units_of([src]))
        return w[rows][:, cols]

    @torch.no_grad()
    def connection_table(self) -> pd.DataFrame:
        """One row per connection of W: ``pre``, ``post`` (the graph's node indices),
        ``n_synapses`` (of the compiled, possibly null-model, graph; 0 for the dense scheme's
        unconnected pairs), ``summed_size`` (NaN: not tracked), ``projection`` (``"recurrent"``)
        and ``weight`` (the effective weight applied now)."""
        ei = self.recurrent.connections().cpu().numpy()
        w = self.weight().detach().cpu().double().numpy()
        counts = self.plan.count_matrix(signed=False).tocsr()
        n = np.asarray(counts[ei[1], ei[0]]).ravel()
        ids = np.asarray(self.plan.unit_ids)
        return pd.DataFrame({"pre": ids[ei[0]], "post": ids[ei[1]], "n_synapses": n,
                             "summed_size": np.full(len(n), np.nan), "projection": "recurrent",
                             "weight": w[ei[1], ei[0]]})

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per part: the dense ``input`` projection, the ``recurrent``
        weights (per population pair for ``weights="counts"``), the ``dynamics`` (tau, bias)."""
        c = {"input": trainable_parameters(self.inp), "recurrent": trainable_parameters(self.recurrent),
             "dynamics": self.log_tau_excess.numel() + self.bias.numel()}
        c["total"] = trainable_parameters(self)
        return c

    def summary(self) -> pd.DataFrame:
        """Per population: cells, E/I, drive and readout cells, tau and bias."""
        names = self.plan.population_names
        pop = self.population.cpu().numpy()
        drive = np.bincount(pop[self.drive_units.cpu().numpy()], minlength=len(names))
        read = np.bincount(pop[self.readout_units.cpu().numpy()], minlength=len(names))
        cells = np.bincount(pop, minlength=len(names))
        ei = pd.Series(self.plan.ei).groupby(pop).first()
        return pd.DataFrame({"population": names, "cells": cells,
                             "ei": [ei.get(k, "") for k in range(len(names))],
                             "drive": drive, "readout": read,
                             "tau": self.tau().detach().cpu().numpy().round(3),
                             "bias": self.bias.detach().cpu().numpy().round(3)})

    def __repr__(self) -> str:
        s, c = self.spec, self.parameter_counts()
        rec = self.recurrent
        head = (f"RecurrentColumn(spec={s.name!r}, in_features={self.in_features}, "
                f"units={self.n_units}, out_features={self.out_features}, source={self.source}, "
                f"parameters={c['total']:,}: input {c['input']:,}, recurrent {c['recurrent']:,}, "
                f"dynamics {c['dynamics']:,})\n"
                f"  weights={s.weights}, populations={s.populations}, mask={s.mask}, "
                f"dale={s.dale}, steps={self.steps}, dt={self.dt}, readout_steps={self.readout_steps}, "
                f"connections={rec.n_edges:,} ({self.backend}), "
                f"spectral radius {spectral_radius(self.weight()):.3f}, seed={s.seed}")
        return head + "\n" + "\n".join("  " + line for line in self.summary().to_string(index=False).splitlines())


def _units_of_layer(graph: ConnectomeGraph, plan: NetworkPlan, spec: ColumnSpec, index: int) -> np.ndarray:
    ls = spec.layers[index]
    nodes = _select(graph.nodes, ls)
    local = np.full(graph.n_nodes, -1, dtype=np.int64)
    local[plan.unit_ids] = np.arange(plan.size)
    units = local[nodes]
    if len(units) == 0 or (units < 0).any():
        raise ValueError(f"layer {ls.name!r}: {'no cells' if len(units) == 0 else 'cells without an E/I class'} "
                         f"with cell_type in {ls.cell_types}, layer in {ls.layers}, mtype in {ls.mtypes}")
    return units


def compile_recurrent(graph: ConnectomeGraph, spec: ColumnSpec, in_features: int, *,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> RecurrentColumn:
    """Build a :class:`RecurrentColumn` (``spec.dynamics == "recurrent"``) from a neuron-level
    graph; the null model ``spec.mask`` is applied to the whole graph first."""
    if not isinstance(graph, ConnectomeGraph):
        raise TypeError("dynamics='recurrent' needs a neuron-level ConnectomeGraph")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if spec.mask in NULL_MODELS:
        graph = NULL_MODELS[spec.mask](graph, seed=spec.seed)
    plan = plan_network(graph, spec.populations, "connectome", spec.seed, spec.min_synapses)
    n = plan.size
    drive = _units_of_layer(graph, plan, spec, 0)
    readout = _units_of_layer(graph, plan, spec, spec.layer_names.index(spec.output_layer))
    pre, post, nsyn = plan.pre, plan.post, plan.n_synapses
    if spec.weights == "dense" or spec.mask == "dense":
        q, p = np.divmod(np.arange(n * n), n)
        keep = q != p
        post, pre, nsyn = q[keep], p[keep], np.ones(int(keep.sum()))
    density = len(pre) / max(1, n * n)
    backend = choose_backend(n, n, density, dev, spec.backend)
    sign = plan.sign if spec.dale else None
    gen = torch.Generator().manual_seed(int(spec.seed))
    if spec.weights == "counts":
        groups = np.asarray(plan.population_names, dtype=object)[plan.population]
        rec = count_module(pre, post, nsyn, n, n, groups, groups, sign, backend, dev, dtype)
    else:
        order = np.lexsort((pre, post))
        ei = torch.as_tensor(np.stack([pre[order], post[order]]), dtype=torch.long)
        s = None if sign is None else torch.as_tensor(sign)
        if backend == "sparse":
            rec = SparseLinear(n, n, ei, bias=False, sign=s, generator=gen, device=dev, dtype=dtype)
        else:
            m = torch.zeros(n, n, dtype=torch.bool)
            m[ei[1], ei[0]] = True
            rec = MaskedLinear(n, n, m, bias=False, sign=s, generator=gen, device=dev, dtype=dtype)
    source = "neuron graph" + (f" ({spec.mask} null model)" if spec.mask in NULL_MODELS else "")
    col = RecurrentColumn(spec, in_features, plan, rec, drive, readout, backend, source, generator=gen)
    col.scale_to_radius_(spec.init_radius)
    return col.to(device=dev, dtype=dtype) if (device is not None or dtype is not None) else col

