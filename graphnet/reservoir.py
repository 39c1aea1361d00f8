"""A connectome reservoir: the whole column as a fixed recurrent network, only a readout trained.

The setting of conn2res (Suárez et al., Nat Commun 2024) on the MICrONS column: the recurrent
weights are the connectome's own, ``W = s_j n_ij`` (the presynaptic cell's Dale sign times the
pair's synapse count, :meth:`graphnet.plan.NetworkPlan.count_matrix`), multiplied by one number so
that the spectral radius of ``W`` (its largest eigenvalue modulus) is ``rho``. Units are leaky:

    x(t+1) = (1 - a) x(t) + a f(W x(t) + W_in u(t)),      x(0) = 0,

``a`` the leak in (0, 1], ``f`` = tanh (or the identity, ``"linear"``). The input ``u(t)`` (``d``
channels) enters only the input populations (default 4P) through ``W_in``; a readout sees only the
output populations (default 23P and the 5P types). ``x(t)`` is the state that ``u(t)`` has not
reached yet: it carries ``u(t-1), u(t-2), ...``.

:class:`Reservoir` simulates a batch of input sequences at once on one of three backends, which
give the same states: ``"torch"`` (a torch CSR matrix; the fastest here, ``bench/reservoir.py``),
``"scipy"`` (a scipy CSR matrix) and ``"dense"`` (a dense torch matrix, the plain baseline).
:func:`connectome_reservoir` builds one from a :class:`~graphnet.plan.NetworkPlan` and a
:class:`ReservoirConfig`. States that stop being finite or grow past :data:`DIVERGENCE_LIMIT`
(possible with the linear activation and ``rho`` > 1) raise :class:`ReservoirDivergedError`
naming ``rho`` and the step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from .plan import NetworkPlan
from .spectral import spectral_radius  # noqa: F401 - part of the reservoir's API

ACTIVATIONS = ("tanh", "linear")
BACKENDS = ("torch", "scipy", "dense")
DTYPES = ("float32", "float64")
#: input into layer 4, readout from layers 2/3 and 5 (the column's feedforward path)
DEFAULT_INPUT_POPULATIONS: tuple[str, ...] = ("4P",)
DEFAULT_OUTPUT_POPULATIONS: tuple[str, ...] = ("23P", "5P-IT", "5P-ET", "5P-NP")
#: |x| beyond this is divergence (tanh units stay within 1)
DIVERGENCE_LIMIT = 1e6


class ReservoirDivergedError(ValueError):
    """The reservoir's states became non-finite or grew past the divergence limit."""


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
def _populations(value: Any, name: str) -> tuple[str, ...] | str:
    if value == "all":
        return "all"
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    value = tuple(str(v).strip() for v in value)
    if not value:
        raise ValueError(f"ReservoirConfig.{name} is empty; name at least one population or 'all'")
    return value


@dataclass(frozen=True)
class ReservoirConfig:
    """One connectome reservoir.

    Attributes:
        rho: spectral radius ``W`` is scaled to (> 0).
        leak: ``a`` in the update, in (0, 1]; 1 is the plain echo state network.
        activation: ``"tanh"`` or ``"linear"``.
        input_populations: populations (as the plan groups cells: cell type by default) that
            receive ``W_in u(t)``.
        output_populations: populations the readout sees, or ``"all"`` for every unit.
        input_scale: ``W_in`` entries are uniform in ``[-input_scale, input_scale]``.
        washout: steps discarded before a readout is fitted (``>= 0``).
        seed: seeds ``W_in``.
        backend: ``"torch"``, ``"scipy"`` or ``"dense"`` (same states; speed differs).
        dtype: ``"float32"`` or ``"float64"`` states and weights.
    """

    rho: float = 0.9
    leak: float = 1.0
    activation: str = "tanh"
    input_populations: tuple[str, ...] = DEFAULT_INPUT_POPULATIONS
    output_populations: tuple[str, ...] | str = DEFAULT_OUTPUT_POPULATIONS
    input_scale: float = 0.1
    washout: int = 500
    seed: int = 0
    backend: str = "torch"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_populations", _populations(self.input_populations, "input_populations"))
        object.__setattr__(self, "output_populations", _populations(self.output_populations, "output_populations"))
        if self.input_populations == "all":
            raise ValueError("ReservoirConfig.input_populations='all' is not allowed; name the "
                             "populations that receive the input")
        if not (np.isfinite(self.rho) and self.rho > 0):
            raise ValueError(f"ReservoirConfig.rho must be > 0, got {self.rho}")
        if not (0.0 < self.leak <= 1.0):
            raise ValueError(f"ReservoirConfig.leak must be in (0, 1], got {self.leak}")
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"ReservoirConfig.input_scale must be > 0, got {self.input_scale}")
        if int(self.washout) != self.washout or self.washout < 0:
            raise ValueError(f"ReservoirConfig.washout must be an integer >= 0, got {self.washout}")
        for name, allowed in (("activation", ACTIVATIONS), ("backend", BACKENDS), ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ReservoirConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")

    def replace(self, **changes: Any) -> "ReservoirConfig":
        d = asdict(self)
        d.update(changes)
        return ReservoirConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_populations", "output_populations"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReservoirConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown ReservoirConfig field(s) {sorted(unknown)}")
        return cls(**d)


def scale_to_spectral_radius(weights: sp.spmatrix, rho: float, radius: float | None = None) -> sp.csr_matrix:
    """``weights * rho / radius`` (``radius``: the matrix's spectral radius, computed when not
    given), a CSR matrix whose spectral radius is ``rho``."""
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    radius = spectral_radius(weights) if radius is None else float(radius)
    if not radius > 0:
        raise ValueError("the recurrent weights have spectral radius 0 (no recurrence, or a "
                         "nilpotent matrix such as a delay line): they cannot be scaled to rho")
    return sp.csr_matrix(weights, dtype=np.float64) * (rho / radius)


# ------------------------------------------------------------------------------------------------
# the reservoir
# ------------------------------------------------------------------------------------------------
class Reservoir:
    """A fixed leaky recurrent network with input and readout units (module doc for the update).

    Args:
        weights: ``(n, n)`` recurrent matrix, rows = post, columns = pre, used as given.
        input_units: ``(n_in,)`` indices of the units ``W_in`` drives.
        readout_units: ``(n_out,)`` indices of the units a readout sees.
        leak, activation, backend, dtype: as in :class:`ReservoirConfig`.
        rho: the spectral radius ``weights`` were scaled to, named in divergence errors
            (``None``: unknown/unscaled).
    """

    def __init__(self, weights: sp.spmatrix | np.ndarray, input_units: Sequence[int] | np.ndarray,
                 readout_units: Sequence[int] | np.ndarray, *, leak: float = 1.0,
                 activation: str = "tanh", backend: str = "torch", dtype: str = "float32",
                 rho: float | None = None, divergence_limit: float = DIVERGENCE_LIMIT) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; choose one of {ACTIVATIONS}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; choose one of {DTYPES}")
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        w = sp.csr_matrix(weights, dtype=np.dtype(dtype))
        n = w.shape[0]
        if w.shape != (n, n):
            raise ValueError(f"weights must be square, got shape {w.shape}")
        self.n = n
        self.input_units = np.asarray(input_units, dtype=np.int64)
        self.readout_units = np.asarray(readout_units, dtype=np.int64)
        for name, idx in (("input_units", self.input_units), ("readout_units", self.readout_units)):
            if idx.ndim != 1 or len(idx) == 0:
                raise ValueError(f"{name} must be a non-empty 1-d index array")
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{name} index out of range for {n} units")
        self.leak, self.activation, self.backend, self.dtype = float(leak), activation, backend, dtype
        self.rho, self.divergence_limit = rho, float(divergence_limit)
        self.weights = w
        self._in_idx = self.input_units if backend == "scipy" else torch.from_numpy(self.input_units)
        self._out_idx = self.readout_units if backend == "scipy" else torch.from_numpy(self.readout_units)
        if backend == "torch":
            self._w = torch.sparse_csr_tensor(
                torch.from_numpy(w.indptr.astype(np.int64)), torch.from_numpy(w.indices.astype(np.int64)),
                torch.from_numpy(w.data), size=w.shape, check_invariants=False)
        elif backend == "dense":
            self._w = torch.from_numpy(w.toarray())

    @property
    def n_inputs_units(self) -> int:
        return len(self.input_units)

    @property
    def n_readout(self) -> int:
        return len(self.readout_units)

    def random_input_weights(self, n_channels: int, scale: float, seed: int) -> np.ndarray:
        """``(n_in, n_channels)`` ``W_in`` with entries uniform in ``[-scale, scale]`` from
        ``numpy.random.default_rng(seed)``."""
        return np.random.default_rng(seed).uniform(-scale, scale, (self.n_inputs_units, n_channels))

    # -- simulation (states held as (n, B): one column per sequence) -----------------------------
    def _matvec(self, x):
        if self.backend == "scipy":
            return self.weights @ x
        return self._w @ x

    def _as_array(self, a: np.ndarray):
        a = np.ascontiguousarray(a, dtype=np.dtype(self.dtype))
        return a if self.backend == "scipy" else torch.from_numpy(a)

    def _check(self, x, step: int) -> None:
        peak = float(np.abs(x).max()) if self.backend == "scipy" else float(x.abs().max())
        if not peak <= self.divergence_limit:   # NaN fails too
            rho = "unscaled" if self.rho is None else f"{self.rho:g}"
            raise ReservoirDivergedError(
                f"reservoir states diverged at step {step} (max |x| = {peak:.3g}, limit "
                f"{self.divergence_limit:g}) with rho={rho}, activation={self.activation}, "
                f"leak={self.leak:g}: lower rho or use the tanh activation")

    def _step(self, x, drive):
        pre = self._matvec(x)
        pre[self._in_idx] += drive
        if self.activation == "tanh":
            pre = np.tanh(pre) if self.backend == "scipy" else torch.tanh(pre)
        if self.leak == 1.0:
            return pre
        return (1.0 - self.leak) * x + self.leak * pre

    def _drive_fn(self, input_weights: np.ndarray, batch: int, channels: int):
        win = np.asarray(input_weights, dtype=np.dtype(self.dtype))
        n_in = self.n_inputs_units
        if win.shape == (n_in, channels):
            w = self._as_array(win)
            return lambda u: w @ u                                   # (n_in, d) @ (d, B)
        if win.shape == (batch, n_in, channels):
            if channels == 1:                                        # one W_in column per sequence
                w = self._as_array(win[:, :, 0].T)                   # (n_in, B)
                return lambda u: w * u                               # u: (1, B)
            w = self._as_array(win)
            if self.backend == "scipy":
                return lambda u: np.einsum("bid,db->ib", w, u)
            return lambda u: torch.einsum("bid,db->ib", w, u)
        raise ValueError(f"input_weights must have shape ({n_in}, {channels}) or ({batch}, {n_in}, "
                         f"{channels}) for {batch} sequences of {channels} channels, got {win.shape}")

    def run(self, inputs: np.ndarray, input_weights: np.ndarray, progress: bool = False) -> np.ndarray:
        """Drive the reservoir from ``x(0) = 0`` with ``inputs`` ``(T, B, d)`` (B sequences at
        once); ``input_weights`` ``(n_in, d)``, shared, or ``(B, n_in, d)``, one per sequence.
        Returns the readout units' states ``(T, B, n_out)``: entry ``t`` is ``x(t + 1)``, the
        state after ``u(t)`` entered."""
        inputs = np.asarray(inputs)
        if inputs.ndim != 3:
            raise ValueError(f"inputs must be (T, B, d), got shape {inputs.shape}")
        T, B, d = inputs.shape
        drive = self._drive_fn(input_weights, B, d)
        u_all = self._as_array(inputs.transpose(0, 2, 1))            # (T, d, B)
        x = self._as_array(np.zeros((self.n, B)))
        out = np.empty((T, B, self.n_readout), dtype=np.dtype(self.dtype))
        ro = self._out_idx
        steps = range(T)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="reservoir", leave=False)
        with torch.inference_mode():
            for t in steps:
                x = self._step(x, drive(u_all[t]))
                self._check(x, t + 1)
                xr = x[ro]
                out[t] = (xr if self.backend == "scipy" else xr.numpy()).T
        return out

    def run_constant(self, inputs: np.ndarray, input_weights: np.ndarray, steps: int) -> np.ndarray:
        """Hold each of ``B`` inputs ``(B, d)`` for ``steps`` steps from ``x(0) = 0``; returns the
        readout units' final states ``x(steps)`` ``(B, n_out)``. ``input_weights``: ``(n_in, d)``."""
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps}")
        inputs = np.asarray(inputs)
        if inputs.ndim != 2:
            raise ValueError(f"inputs must be (B, d), got shape {inputs.shape}")
        B, d = inputs.shape
        drive_current = self._drive_fn(input_weights, B, d)(self._as_array(inputs.T))   # (n_in, B)
        x = self._as_array(np.zeros((self.n, B)))
        with torch.inference_mode():
            for t in range(int(steps)):
                x = self._step(x, drive_current)
                self._check(x, t + 1)
            xr = x[self._out_idx]
        return np.ascontiguousarray((xr if self.backend == "scipy" else xr.numpy()).T)


# ------------------------------------------------------------------------------------------------
# from a network plan
# ------------------------------------------------------------------------------------------------
def population_units(plan: NetworkPlan, populations: tuple[str, ...] | str, field_name: str) -> np.ndarray:
    """Unit indices of ``populations`` (``"all"``: every unit); a ValueError naming the config
    field and the populations that have no cells."""
    if populations == "all":
        return np.arange(plan.size)
    missing = [p for p in populations if p not in plan.population_names]
    if missing:
        raise ValueError(f"ReservoirConfig.{field_name}: population(s) {missing} have no cells in "
                         f"this network; populations: {plan.population_names}")
    return plan.units_of(list(populations))


def connectome_reservoir(plan: NetworkPlan, config: ReservoirConfig,
                         radius: float | None = None) -> Reservoir:
    """The reservoir of a network plan: ``W = s_j n_ij`` scaled to ``config.rho``. ``radius``:
    the spectral radius of the plan's unscaled count matrix, when already known (a sweep over
    rho computes it once per network)."""
    inputs = population_units(plan, config.input_populations, "input_populations")
    outputs = population_units(plan, config.output_populations, "output_populations")
    w = scale_to_spectral_radius(plan.count_matrix(signed=True), config.rho, radius)
    return Reservoir(w, inputs, outputs, leak=config.leak, activation=config.activation,
                     backend=config.backend, dtype=config.dtype, rho=config.rho)
