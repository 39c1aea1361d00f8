"""Dense (:class:`MaskedLinear`) or sparse (:class:`SparseLinear`) per projection.

:func:`choose_backend` compares a projection's density with the crossover density measured by
``bench/compiler.py`` (forward + backward, batch 256, float32): below the crossover the sparse
layer was faster. Between measured sizes the crossover is interpolated linearly in
(log size, log density); outside, the nearest measured size is used. A dense layer whose
training memory would not fit the device's budget is made sparse whatever the timing.
"""

from __future__ import annotations

import math

import torch

#: ``device type -> ((n, crossover density), ...)`` for square ``n x n`` layers, batch 256:
#: the density at which sparse and dense forward+backward take equal time (sparse faster below).
#: Measured by ``python bench/compiler.py`` (see ``bench/out/compiler.md``): CPU = x86-64, torch
#: 2.13 (MKL), one intra-op thread, on a shared (loaded) 2-core machine; the values are rounded
#: from several runs whose log-log interpolated crossovers scattered by about +-30 % (300: 5-15 %,
#: 1k: 8-13 %, 3k: 11-15 %, 10k: 10-13 %). Near the crossover both kernels take about the same
#: time, so the scatter costs little. Above the largest measured size a dense layer rarely fits
#: memory anyway (see DENSE_MEMORY_FRACTION).
CROSSOVER: dict[str, tuple[tuple[int, float], ...]] = {
    "cpu": ((300, 0.08), (1000, 0.11), (3000, 0.12), (10000, 0.125)),
}
#: Where a device type has no measurement (e.g. CUDA in a session without a GPU), this provisional
#: table is used; rerun the benchmark on that device and put its figures in ``CROSSOVER``.
PROVISIONAL_CROSSOVER: tuple[tuple[int, float], ...] = ((1000, 0.005), (10000, 0.01), (100000, 0.01))

#: Bytes per dense entry while training: weight, grad, two AdamW moments, effective weight, mask.
DENSE_BYTES_PER_ENTRY = 4 * 5 + 1
#: Fraction of the device's memory a single dense layer may take before it is made sparse.
DENSE_MEMORY_FRACTION = 0.25


def crossover_density(n_out: int, n_in: int, device: str | torch.device = "cpu") -> float:
    """Interpolated crossover density for an ``n_out x n_in`` layer on ``device``."""
    kind = torch.device(device).type
    table = CROSSOVER.get(kind, PROVISIONAL_CROSSOVER)
    n = math.sqrt(max(1, n_out) * max(1, n_in))
    sizes = [math.log(s) for s, _ in table]
    dens = [math.log(max(d, 1e-12)) for _, d in table]
    x = math.log(n)
    if x <= sizes[0]:
        return math.exp(dens[0])
    if x >= sizes[-1]:
        return math.exp(dens[-1])
    for (x0, y0), (x1, y1) in zip(zip(sizes, dens), zip(sizes[1:], dens[1:])):
        if x0 <= x <= x1:
            return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return math.exp(dens[-1])  # pragma: no cover


def device_memory_bytes(device: str | torch.device = "cpu") -> int:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev).total_memory)
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def dense_training_bytes(n_out: int, n_in: int) -> int:
    """Rough bytes a dense masked layer needs while training (batch terms excluded)."""
    return int(n_out) * int(n_in) * DENSE_BYTES_PER_ENTRY


def choose_backend(n_out: int, n_in: int, density: float, device: str | torch.device = "cpu",
                   backend: str = "auto") -> str:
    """``"dense"`` or ``"sparse"``. ``backend`` other than ``"auto"`` is returned as is."""
    if backend in ("dense", "sparse"):
        return backend
    if backend != "auto":
        raise ValueError(f"backend={backend!r}; choose 'auto', 'dense' or 'sparse'")
    if dense_training_bytes(n_out, n_in) > DENSE_MEMORY_FRACTION * device_memory_bytes(device):
        return "sparse"
    return "sparse" if density < crossover_density(n_out, n_in, device) else "dense"
