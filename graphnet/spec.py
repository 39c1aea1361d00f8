"""What a compiled column is made of: :class:`ColumnSpec` and :class:`LayerSpec`.

A spec names the network layers (each a set of graph populations), the projections between
them (``(src, dst)`` pairs, feedforward in the order the layers are listed) and every biological
switch the training pipeline ablates. It holds only JSON types after :meth:`ColumnSpec.to_dict`
and round-trips through :meth:`ColumnSpec.from_dict`, so it is saved with every run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Iterable, Sequence

WEIGHT_INITS = ("fan_in", "synapse_count", "summed_size")
MASKS = ("connectome", "random", "block_random", "degree_shuffle", "weight_shuffle",
         "label_shuffle", "dense")
BACKENDS = ("auto", "dense", "sparse")
INHIBITION_MEASURES = ("n_synapses", "connections")
#: How a projection's weights are parametrised (see :class:`ColumnSpec`).
WEIGHT_SCHEMES = ("free", "counts", "dense")
#: How the column computes: layer after layer, or every cell as one leaky rate network.
DYNAMICS = ("feedforward", "recurrent")
#: How cells are grouped into populations that share parameters (mirrors
#: :data:`graphnet.plan.POPULATION_LABELS`).
POPULATIONS = ("cell_type", "mtype", "type_layer")


def _tuple(v: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    return tuple(str(x) for x in v)


@dataclass(frozen=True)
class LayerSpec:
    """One network layer: the cells whose coarse type is in ``cell_types`` *and* whose cortical
    layer is in ``layers`` (and, if given, whose m-type is in ``mtypes``).

    ``cell_types``/``layers``/``mtypes`` of ``None`` mean "any". Cells are ordered by the order of
    ``cell_types`` (then ``layers``, then node index), so a layer's units are grouped by population.
    """

    name: str
    cell_types: tuple[str, ...] | None
    layers: tuple[str, ...] | None
    mtypes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell_types", _tuple(self.cell_types))
        object.__setattr__(self, "layers", _tuple(self.layers))
        object.__setattr__(self, "mtypes", _tuple(self.mtypes))
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"layer name must be a non-empty string, got {self.name!r}")
        if "." in self.name or self.name == "input":
            raise ValueError(f"layer name {self.name!r}: no '.' and not 'input'")


@dataclass(frozen=True)
class ColumnSpec:
    r"""Which populations form which layer, how they connect, and the biological switches.

    Attributes:
        layers: network layers in forward order; the first receives the dense input projection.
        projections: ``(src, dst)`` layer-name pairs; ``src`` must come before ``dst`` in
            ``layers`` (feedforward, skips allowed: e.g. ``("A", "C")`` for L4 -> L5).
        output: the layer whose activity is the column's output (default: the last).
        intra_layer: add each layer's within-layer connections as one extra masked step.
        dale: presynaptic cells keep the sign of their class (E >= 0, I <= 0).
        graded_inhibition: scale each cell's activity down by its normalised inhibitory input.
        inhibition_strength: alpha in ``gain = 1 - alpha * iota`` (0 <= alpha <= 1).
        inhibition_measure: ``"n_synapses"`` (inhibitory synapses onto the cell) or
            ``"connections"`` (inhibitory presynaptic cells).
        layer_norm: LayerNorm over each layer's units before the nonlinearity.
        noise_std: std of Gaussian synaptic noise added to the (normalised) input in training.
        hebbian_rate: eta of the Oja-style Hebbian update (0 = off).
        homeostasis: homeostatic per-unit threshold in the plasticity step.
        homeostatic_target: mean activity each unit is pulled to.
        homeostatic_rate: step size of the threshold update.
        min_synapses: a pair is connected when it has at least this many synapses.
        weight_init: ``"fan_in"`` (scaled by masked fan-in) or magnitudes proportional to the
            pair's ``"synapse_count"``/``"summed_size"`` (same per-unit variance).
        weights: the weight scheme. ``"free"``: one learnable weight per connection of the mask
            (the paper's). ``"counts"``: the connectome fixes every weight up to one learnable
            non-negative scale per (post population, pre population) pair,
            :math:`W_{ij} = s_j \, n_{ij} \, g_{P(i) P(j)}` with :math:`s_j` the presynaptic
            cell's Dale sign (+1 for every cell when ``dale`` is off), :math:`n_{ij}` the pair's
            synapse count and :math:`g = e^{\theta}`; biases and LayerNorm gains are then per
            population too (flyvis's parametrisation). ``"dense"``: every pair connected, one
            free weight each (no mask; ``mask`` must stay ``"connectome"``).
        populations: what a population is for the parameters it shares: ``"cell_type"``,
            ``"mtype"`` or ``"type_layer"`` (``"23P|L2/3"``).
        dynamics: ``"feedforward"`` (layers A -> B -> ..., the paper's) or ``"recurrent"``: every
            signed cell of the graph, E and I, as one leaky rate network
            :math:`\tau_P \dot x = -x + W \mathrm{ReLU}(x) + b_P + I` integrated by explicit
            Euler for ``steps`` steps of ``dt``, :math:`W` over the whole connectome by the
            weight scheme, :math:`\tau_P` and :math:`b_P` learnable per population. The first
            layer's cells receive the input, the output layer's cells are read out (their rates
            averaged over the last ``readout_steps`` steps); projections are not used.
        steps: Euler steps of the recurrent column (>= 1).
        dt: Euler step, in units of the initial time constant (> 0).
        readout_steps: the recurrent column's output averages this many last steps.
        init_radius: the recurrent column's initial weights are scaled so that the spectral
            radius of :math:`W` is this (> 0); below 1 the initial dynamics are stable.
        mask: ``"connectome"`` or a null model (graph transforms seeded with ``seed``,
            :mod:`graphnet.null_models`: ``"block_random"``, ``"degree_shuffle"`` and
            ``"weight_shuffle"`` keep every projection's edge count and synapse total;
            ``"random"`` and ``"label_shuffle"`` do not) or ``"dense"`` (all ones).
        backend: ``"auto"`` (measured crossover), ``"dense"`` or ``"sparse"``.
        seed: seeds mask sampling, null models and weight initialisation.
    """

    layers: tuple[LayerSpec, ...]
    projections: tuple[tuple[str, str], ...]
    output: str | None = None
    intra_layer: bool = True
    dale: bool = True
    graded_inhibition: bool = True
    inhibition_strength: float = 0.5
    inhibition_measure: str = "n_synapses"
    layer_norm: bool = True
    noise_std: float = 0.0
    hebbian_rate: float = 0.0
    homeostasis: bool = False
    homeostatic_target: float = 0.1
    homeostatic_rate: float = 0.01
    min_synapses: int = 1
    weight_init: str = "fan_in"
    weights: str = "free"
    populations: str = "cell_type"
    dynamics: str = "feedforward"
    steps: int = 10
    dt: float = 0.25
    readout_steps: int = 3
    init_radius: float = 0.9
    mask: str = "connectome"
    backend: str = "auto"
    seed: int = 0
    name: str = "custom"

    def __post_init__(self) -> None:
        layers = tuple(l if isinstance(l, LayerSpec) else LayerSpec(**l) for l in self.layers)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "projections",
                           tuple((str(a), str(b)) for a, b in self.projections))
        names = [l.name for l in layers]
        if not names:
            raise ValueError("a column needs at least one layer")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate layer names in {names}")
        order = {n: i for i, n in enumerate(names)}
        for src, dst in self.projections:
            if src not in order or dst not in order:
                raise ValueError(f"projection ({src!r}, {dst!r}) names an unknown layer; "
                                 f"layers: {names}")
            if order[src] >= order[dst]:
                raise ValueError(f"projection ({src!r}, {dst!r}) is not feedforward in the layer "
                                 f"order {names} (within-layer links are `intra_layer`)")
        if len(set(self.projections)) != len(self.projections):
            raise ValueError(f"duplicate projections in {self.projections}")
        fed = {dst for _, dst in self.projections} | {names[0]}
        if set(names) - fed and self.dynamics == "feedforward":
            raise ValueError(f"layer(s) {sorted(set(names) - fed)} receive no projection")
        if self.output is not None and self.output not in order:
            raise ValueError(f"output {self.output!r} is not a layer of {names}")
        for attr, allowed in (("weight_init", WEIGHT_INITS), ("mask", MASKS),
                              ("backend", BACKENDS), ("inhibition_measure", INHIBITION_MEASURES),
                              ("weights", WEIGHT_SCHEMES), ("dynamics", DYNAMICS),
                              ("populations", POPULATIONS)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"{attr}={getattr(self, attr)!r}; choose one of {allowed}")
        if not 0.0 <= self.inhibition_strength <= 1.0:
            raise ValueError(f"inhibition_strength must be in [0, 1], got {self.inhibition_strength}")
        for attr in ("noise_std", "hebbian_rate", "homeostatic_rate"):
            if not getattr(self, attr) >= 0.0:
                raise ValueError(f"{attr} must be >= 0, got {getattr(self, attr)}")
        if int(self.min_synapses) < 1:
            raise ValueError(f"min_synapses must be >= 1, got {self.min_synapses}")
        self._check_schemes()

    def _check_schemes(self) -> None:
        """The combinations of weight scheme, mask and dynamics that mean something."""
        if self.weights == "dense" and self.mask not in ("connectome", "dense"):
            raise ValueError(f"weights='dense' connects every pair (no mask), so mask={self.mask!r} "
                             "would not be used; keep mask='connectome'")
        if self.weights == "counts":
            if self.mask == "dense":
                raise ValueError("weights='counts' needs the synapse counts of a graph mask; "
                                 "mask='dense' has none (use weights='dense' for a dense layer)")
            if self.hebbian_rate > 0:
                raise ValueError("hebbian_rate > 0 needs a free weight per connection; with "
                                 "weights='counts' the synapse counts fix every weight: set "
                                 "hebbian_rate=0")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if not 1 <= int(self.readout_steps) <= int(self.steps):
            raise ValueError(f"readout_steps must be in [1, steps={self.steps}], got {self.readout_steps}")
        if not self.init_radius > 0:
            raise ValueError(f"init_radius must be > 0, got {self.init_radius}")
        if self.dynamics == "recurrent":
            if len(self.layers) < 2:
                raise ValueError("dynamics='recurrent' needs an input layer and an output layer "
                                 "(the cells driven by the input and the cells read out)")
            if self.hebbian_rate > 0 or self.homeostasis:
                raise ValueError("dynamics='recurrent' has no Hebbian or homeostatic plasticity: "
                                 "set hebbian_rate=0 and homeostasis=False")
            if self.graded_inhibition:
                raise ValueError("dynamics='recurrent' simulates the inhibitory cells themselves: "
                                 "set graded_inhibition=False")

    # -- views ------------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(l.name for l in self.layers)

    @property
    def output_layer(self) -> str:
        return self.output or self.layers[-1].name

    def replace(self, **changes: Any) -> "ColumnSpec":
        """A copy with some fields changed (for ablations)."""
        return replace(self, **changes)

    # -- presets ----------------------------------------------------------------------------
    @classmethod
    def bionic(cls, **overrides: Any) -> "ColumnSpec":
        """The BioNIC paper's column, its layers grouped by coarse type (not cut by soma depth):
        A = 4P, B = 23P, C = 5P-IT/ET/NP, D = 6P-IT/CT/U and WM-P, which on the real MICrONS
        column (the default graph) gives the paper's 266/349/185/383 units exactly; a graph
        without 6P-U or WM-P cells (the surrogate) simply has none in D. Feedforward
        A -> B -> C -> D, within-layer links on, inhibitory cells (BC, MC, BPC, NGC, Unsure I)
        acting through graded inhibition, Dale's law, LayerNorm, synaptic noise, Hebbian
        plasticity with homeostatic regulation. "Unsure" cells are in no layer. ``overrides``
        change any field."""
        base = dict(
            layers=(
                LayerSpec("A", ("4P",), None),
                LayerSpec("B", ("23P",), None),
                LayerSpec("C", ("5P-IT", "5P-ET", "5P-NP"), None),
                LayerSpec("D", ("6P-IT", "6P-CT", "6P-U", "WM-P"), None),
            ),
            projections=(("A", "B"), ("B", "C"), ("C", "D")),
            intra_layer=True, dale=True, graded_inhibition=True, inhibition_strength=0.5,
            layer_norm=True, noise_std=0.1, hebbian_rate=1e-4, homeostasis=True,
            homeostatic_target=0.1, homeostatic_rate=0.01, min_synapses=1,
            weight_init="fan_in", mask="connectome", backend="auto", seed=0, name="bionic",
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def recurrent(cls, **overrides: Any) -> "ColumnSpec":
        """Every signed cell of the column (E and I) as one leaky rate network (``dynamics=
        "recurrent"``), weights fixed by the synapse counts with a learnable scale per (post type,
        pre type) pair (``weights="counts"``), time constants and biases per cell type. The conv
        features drive the 4P cells; the output is the rate of the 23P and 5P cells averaged over
        the last ``readout_steps`` of ``steps`` Euler steps, LayerNorm'd (without affine
        parameters). ``overrides`` change any field."""
        base = dict(
            layers=(
                LayerSpec("drive", ("4P",), None),
                LayerSpec("readout", ("23P", "5P-IT", "5P-ET", "5P-NP"), None),
            ),
            projections=(), output="readout", dynamics="recurrent", weights="counts",
            populations="cell_type", steps=10, dt=0.25, readout_steps=3, init_radius=0.9,
            intra_layer=False, dale=True, graded_inhibition=False, layer_norm=True,
            noise_std=0.0, hebbian_rate=0.0, homeostasis=False, min_synapses=1,
            weight_init="fan_in", mask="connectome", backend="auto", seed=0, name="recurrent",
        )
        base.update(overrides)
        return cls(**base)

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, str, numbers, bools, None)."""
        d = asdict(self)
        d["layers"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in l.items()} for l in d["layers"]
        ]
        d["projections"] = [list(p) for p in self.projections]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ColumnSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ColumnSpec field(s) {sorted(unknown)}")
        d = dict(d)
        d["layers"] = tuple(LayerSpec(**l) for l in d["layers"])
        d["projections"] = tuple(tuple(p) for p in d["projections"])
        return cls(**d)



def chain(layers: Sequence[LayerSpec], **kw: Any) -> ColumnSpec:
    """A spec whose layers project one to the next in order."""
    names = [l.name for l in layers]
    return ColumnSpec(layers=tuple(layers), projections=tuple(zip(names[:-1], names[1:])), **kw)
