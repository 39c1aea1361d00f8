"""Memory capacity of a reservoir (Jaeger 2001, "Short term memory in echo state networks").

An i.i.d. input ``u(t)`` uniform in [-1, 1] drives the reservoir through the input populations.
For each delay ``k = 1..K`` a linear readout of the readout units' state ``x(t)`` is fitted to
``u(t - k)`` by ridge regression on the standardised states, the regularisation chosen per delay by efficient leave-one-out
cross-validation on the training segment (scikit-learn's ``RidgeCV``). It is scored on a held-out
segment that follows the training segment as the squared correlation ``r_k^2`` between the
readout and ``u(t - k)``; ``MC = sum_k r_k^2``.

``x(t)`` is the state ``u(t)`` has not reached (:mod:`graphnet.reservoir`), so delay 1 is the most
recent input the state can carry. With this rule a delay line of ``N`` units (shift register,
input into the first, linear units, every unit read) has ``r_k^2 = 1`` for ``k <= N`` and 0 after:
``MC = N``; a linear reservoir without recurrence has ``MC = 1 - (1 - a)^(2K)`` (its state is one
leaky trace of the input), i.e. 1 for ``a = 1``. Unrelated targets still score about
``1 / n_test`` each, so ``MC`` carries a chance floor of about ``K / n_test``.

Several input sequences ("input seeds": seed ``s`` draws ``W_in`` and ``u`` from
``numpy.random.default_rng(s)``) run as one batch through the reservoir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .reservoir import Reservoir

#: ridge penalties RidgeCV chooses from (per delay)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 5, 9))


@dataclass
class MemoryCapacity:
    """Per input seed: ``mc`` ``(S,)``, ``r2`` ``(S, K)`` (delay ``k`` in column ``k - 1``),
    the ridge penalty chosen per delay ``alpha`` ``(S, K)``."""

    seeds: list[int]
    mc: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.mc.mean())


def input_sequences(seeds: Sequence[int], n_steps: int, n_input_units: int, input_scale: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(u, W_in)``: ``u`` ``(T, S, 1)`` uniform in [-1, 1] and ``W_in`` ``(S, n_in, 1)`` uniform in
    ``[-input_scale, input_scale]``, sequence ``i`` from ``default_rng(seeds[i])``."""
    u = np.empty((n_steps, len(seeds), 1))
    win = np.empty((len(seeds), n_input_units, 1))
    for i, s in enumerate(seeds):
        rng = np.random.default_rng(int(s))
        win[i, :, 0] = rng.uniform(-input_scale, input_scale, n_input_units)
        u[:, i, 0] = rng.uniform(-1.0, 1.0, n_steps)
    return u, win


def delay_targets(u: np.ndarray, start: int, stop: int, max_delay: int) -> np.ndarray:
    """``(stop - start, K)``: row ``j`` holds ``u(t - k)``, ``k = 1..K``, for ``t = start + j``."""
    t = np.arange(start, stop)[:, None]
    return u[t - np.arange(1, max_delay + 1)[None, :]]


def squared_correlation(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Column-wise squared Pearson correlation of ``(n, K)`` arrays; 0 where a column is constant."""
    p = pred - pred.mean(0)
    q = target - target.mean(0)
    den = np.sqrt((p * p).sum(0) * (q * q).sum(0))
    num = (p * q).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return r * r


def memory_capacity(reservoir: Reservoir, seeds: Sequence[int] = (1, 2, 3, 4, 5), *,
                    max_delay: int = 100, washout: int = 500, n_train: int = 2000,
                    n_test: int = 1000, input_scale: float = 0.1,
                    alphas: Sequence[float] = DEFAULT_ALPHAS,
                    input_weights: np.ndarray | None = None) -> MemoryCapacity:
    """The reservoir's memory capacity for each input seed (module doc).

    Runs ``washout + n_train + n_test`` steps; ``x(t)`` for the ``n_train`` steps after the
    washout trains the readouts, the ``n_test`` after them score it. ``input_weights``
    ``(n_in, 1)`` replaces the seeded ``W_in`` (for known networks such as a delay line)."""
    from sklearn.linear_model import RidgeCV

    if max_delay < 1:
        raise ValueError(f"max_delay must be >= 1, got {max_delay}")
    if washout < max_delay:
        raise ValueError(f"washout ({washout}) must be >= max_delay ({max_delay}) so every target "
                         "u(t - k) exists")
    if n_train < 2 or n_test < 2:
        raise ValueError(f"n_train and n_test must be >= 2, got {n_train}, {n_test}")
    if not len(seeds):
        raise ValueError("memory_capacity needs at least one input seed")
    seeds = [int(s) for s in seeds]
    total = washout + n_train + n_test
    u, win = input_sequences(seeds, total, reservoir.n_inputs_units, input_scale)
    if input_weights is not None:
        win = np.asarray(input_weights, dtype=float)
    states = reservoir.run(u, win)           # states[t] = x(t + 1)
    # x(t) = states[t - 1] for t = washout .. total - 1
    x_all = states[washout - 1: total - 1].astype(np.float64)
    train, test = slice(0, n_train), slice(n_train, n_train + n_test)
    mc = np.zeros(len(seeds))
    r2 = np.zeros((len(seeds), max_delay))
    chosen = np.zeros((len(seeds), max_delay))
    for i in range(len(seeds)):
        y = delay_targets(u[:, i, 0], washout, total, max_delay)
        x = x_all[:, i, :]
        # standardised on the training segment, so one grid of penalties suits every rho and
        # input scale (constant units stay 0)
        mu, sd = x[train].mean(0), x[train].std(0)
        x = (x - mu) / np.where(sd > 0, sd, 1.0)
        model = RidgeCV(alphas=tuple(alphas), alpha_per_target=True).fit(x[train], y[train])
        r2[i] = squared_correlation(model.predict(x[test]), y[test])
        chosen[i] = np.broadcast_to(model.alpha_, (max_delay,))
        mc[i] = r2[i].sum()
    return MemoryCapacity(seeds=seeds, mc=mc, r2=r2, alpha=chosen, settings={
        "max_delay": max_delay, "washout": washout, "n_train": n_train, "n_test": n_test,
        "input_scale": input_scale, "alphas": [float(a) for a in alphas],
        "readout_units": reservoir.n_readout})
