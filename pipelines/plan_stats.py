r"""The statistics of an experiment plan's report: paired differences over seeds, their 95 %
confidence intervals, Holm's correction over the plan's comparisons, and the seeds a paired
difference needs (power).

Every row of a plan runs the same seeds (``s1..sN``), and seed ``k`` of every row starts from the
same data order, augmentation stream and column seed, so a row is compared with the plan's
reference row *paired by seed*: :math:`d_k = a_k - r_k` (accuracy in percentage points), and

.. math::
    \bar d \pm t_{0.975,\,n-1} \, \frac{s_d}{\sqrt n}, \qquad
    T = \frac{\bar d}{s_d / \sqrt n} \sim t_{n-1} \text{ under } H_0: \mathbb{E}[d] = 0

(:func:`scipy.stats.ttest_rel`, its ``confidence_interval``). The plan makes ``m`` such
comparisons (every row against the reference); Holm's step-down procedure keeps the family-wise
error rate at :math:`\alpha`: with the p-values sorted :math:`p_{(1)} \le \dots \le p_{(m)}`,
:math:`\tilde p_{(i)} = \max_{j \le i} \min\{1, (m - j + 1) \, p_{(j)}\}` (:func:`holm`).

Power (:func:`seeds_needed`): the smallest number of paired seeds ``n`` for which a two-sided
paired t-test at level :math:`\alpha` detects a true mean difference :math:`\delta` with
probability at least ``power``, for a seed-to-seed s.d. of paired differences :math:`\sigma_d`.
Under the alternative, :math:`T` follows a noncentral t with :math:`n - 1` degrees of freedom
and noncentrality :math:`\lambda = \delta \sqrt n / \sigma_d`, so

.. math::
    \mathrm{power}(n) = 1 - F_{t'_{n-1,\lambda}}(t_{1-\alpha/2,\,n-1})
        + F_{t'_{n-1,\lambda}}(-t_{1-\alpha/2,\,n-1})

(:func:`paired_power`); the normal approximation is
:math:`n \approx (z_{1-\alpha/2} + z_{\mathrm{power}})^2 \sigma_d^2 / \delta^2
\approx 7.85 \, \sigma_d^2 / \delta^2` at :math:`\alpha = 0.05`, power 0.8.

The t interval treats each seed's accuracy as exact; it is measured on a finite test set. Where the
runs stored their per-image predictions (:mod:`pipelines.predictions`), two image-level
statistics cover that sampling too. With :math:`c^{a}_{k,i}, c^{r}_{k,i} \in \{0, 1\}` whether
row and reference classified image :math:`i` of seed :math:`k` correctly, and the paired
differences :math:`d_{k,i} = c^{a}_{k,i} - c^{r}_{k,i} \in \{-1, 0, 1\}`:

* :func:`paired_bootstrap` -- a two-stage paired bootstrap of
  :math:`\Delta = 100 \cdot \frac1n \sum_k \frac1{N_k} \sum_i d_{k,i}`: draw ``n`` seeds with
  replacement, then, within each drawn seed, its ``N_k`` test images with replacement (the same
  image indices for row and reference: the resampled unit is the pair, :math:`d_{k,i}`); the 95 %
  interval is the 2.5 and 97.5 percentiles of the resampled :math:`\Delta`. Resampling ``N``
  values of :math:`d \in \{-1, 0, 1\}` with replacement is drawing their counts from a multinomial
  with the observed proportions, so each resample costs three numbers, not ``N`` indices (exactly
  the same distribution).
* :func:`mcnemar_exact` -- per seed, McNemar's exact test: of the :math:`b + c` discordant images
  (:math:`b`: only the row right, :math:`c`: only the reference right), :math:`b \sim
  \mathrm{Bin}(b + c, 1/2)` under :math:`H_0`; two-sided p from :func:`scipy.stats.binomtest`.

With 3-5 seeds the seed stage of the bootstrap draws from only that many values, and a percentile
bootstrap undercovers at such n: read it beside the t interval (the seeds) as what the sampling of
the test images adds, not as a replacement for it. McNemar asks, per seed, whether the two trained
networks differ on these images; it says nothing about seed-to-seed variation.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize, stats


def paired_delta(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Paired difference ``a - b`` over seeds: ``{n, mean, sd, lo, hi, p}``; ``lo``/``hi``/``p``
    are ``None`` with fewer than 2 pairs or identical differences (no spread: no test)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    d = a - b
    out = {"n": int(d.size), "mean": float(d.mean()) if d.size else None,
           "sd": float(d.std(ddof=1)) if d.size > 1 else None, "lo": None, "hi": None, "p": None}
    if d.size < 2 or np.ptp(d) == 0:
        return out
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    out.update(lo=float(ci.low), hi=float(ci.high), p=float(res.pvalue))
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (module doc), in the given order; ``None`` entries (no test) are
    kept as ``None`` and do not count as comparisons."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def paired_power(n: int, delta: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs (module doc)."""
    if n < 2:
        return 0.0
    df = n - 1
    tc = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) * math.sqrt(n) / sd
    p = float(stats.nct.sf(tc, df, nc) + stats.nct.cdf(-tc, df, nc))
    if math.isnan(p):       # scipy's noncentral t fails at large noncentrality: the normal limit
        p = float(stats.norm.sf(tc - nc) + stats.norm.cdf(-tc - nc))
    return p


def seeds_needed(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8,
                 max_n: int = 100_000) -> int:
    """The smallest ``n >= 2`` with :func:`paired_power` ``>= power``."""
    if not sd > 0 or not delta != 0:
        raise ValueError(f"need sd > 0 and delta != 0, got sd={sd}, delta={delta}")
    n = 2
    while paired_power(n, delta, sd, alpha) < power:
        n += 1
        if n > max_n:
            raise ValueError(f"more than {max_n} seeds needed (sd={sd}, delta={delta})")
    return n


def detectable_delta(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference (same units as ``sd``) that ``n`` paired seeds detect with
    probability ``power``: the root of :func:`paired_power` ``(n, delta, sd) = power`` in delta."""
    if n < 2 or not sd > 0:
        raise ValueError(f"need n >= 2 and sd > 0, got n={n}, sd={sd}")
    hi = sd
    while paired_power(n, hi, sd, alpha) < power:       # power rises with delta: bracket the root
        hi *= 2
    return float(optimize.brentq(lambda d: paired_power(n, d, sd, alpha) - power, 0.0, hi, xtol=1e-9))


#: Resamples and seed of :func:`paired_bootstrap` (a report is reproducible to the digit).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def paired_bootstrap(row_correct: Sequence[np.ndarray], ref_correct: Sequence[np.ndarray],
                     confidence: float = 0.95, n_boot: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict:
    """Two-stage paired bootstrap (module doc) of the accuracy difference row - reference, in
    percentage points: ``{"n", "mean", "lo", "hi", "n_boot"}``. ``row_correct[k]`` and
    ``ref_correct[k]``: (N_k,) bool, which test images seed ``k`` of each classified correctly
    (the same images in the same order)."""
    if len(row_correct) != len(ref_correct) or not row_correct:
        raise ValueError(f"need the same number (>= 1) of seeds for row and reference, got "
                         f"{len(row_correct)} and {len(ref_correct)}")
    counts = []
    for k, (a, r) in enumerate(zip(row_correct, ref_correct)):
        a, r = np.asarray(a, bool), np.asarray(r, bool)
        if a.shape != r.shape or a.ndim != 1 or a.size == 0:
            raise ValueError(f"seed {k}: row and reference need the same non-empty images, got "
                             f"shapes {a.shape} and {r.shape}")
        d = a.astype(np.int8) - r.astype(np.int8)
        counts.append([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()])
    counts = np.asarray(counts, np.int64)                       # (n seeds, 3): d = -1, 0, +1
    sizes = counts.sum(1)
    props = counts / sizes[:, None]
    rng = np.random.default_rng(seed)
    n = len(counts)
    pick = rng.integers(0, n, size=(n_boot, n))                 # seeds drawn with replacement
    drawn = rng.multinomial(sizes[pick], props[pick])           # images drawn within each seed
    deltas = 100 * ((drawn[..., 2] - drawn[..., 0]) / sizes[pick]).mean(1)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(deltas, [tail, 100 - tail])
    mean = 100 * float(((counts[:, 2] - counts[:, 0]) / sizes).mean())
    return {"n": n, "mean": mean, "lo": float(lo), "hi": float(hi), "n_boot": int(n_boot)}


def mcnemar_exact(row_correct: np.ndarray, ref_correct: np.ndarray) -> dict:
    """McNemar's exact test on one seed's paired images (module doc): ``{"b", "c", "p"}``,
    ``b`` images only the row got right, ``c`` only the reference; ``p`` two-sided (1 when no
    image is discordant)."""
    a, r = np.asarray(row_correct, bool), np.asarray(ref_correct, bool)
    if a.shape != r.shape:
        raise ValueError(f"row and reference differ in images: shapes {a.shape} and {r.shape}")
    b, c = int((a & ~r).sum()), int((~a & r).sum())
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"b": b, "c": c, "p": p}


def pooled_sd(groups: Sequence[Sequence[float]]) -> float | None:
    """:math:`\\sqrt{\\sum_k (n_k - 1) s_k^2 / \\sum_k (n_k - 1)}` over groups of at least 2
    values (the s.d. of paired differences pooled over a plan's comparisons)."""
    num = den = 0.0
    for g in groups:
        g = np.asarray(g, float)
        if g.size >= 2:
            num += (g.size - 1) * float(g.var(ddof=1))
            den += g.size - 1
    return math.sqrt(num / den) if den else None
