"""Benchmark: the cost of the connectome reservoir sweep, per network and per spectral radius.

    python bench/reservoir.py            # ~2 min on 2 shared cores
    python bench/reservoir.py --quick    # fewer steps, seconds

On the real MICrONS column (1,351 units, 75,251 connections), single-threaded (torch and BLAS),
float32, minimum over ``--repeats`` interleaved repetitions:

* **per network** (done once per network, shared by every rho): the network plan with its null
  model applied (``plan_network``), and the spectral radius by ARPACK
  (``graphnet.reservoir.spectral_radius``) against a dense eigenvalue solve (``numpy.linalg.eigvals``);
* **per rho**, the simulation of one reservoir: the memory-capacity run (5 input sequences as
  one batch, ``washout + train + test`` = 3,500 steps) and a FER-2013 pass (32,298 images in
  batches of 512, 20 steps each), each on the three backends of ``graphnet.reservoir.Reservoir``:
  ``torch`` (torch CSR), ``scipy`` (scipy CSR) and ``dense`` (a dense torch matrix, the plain
  baseline); ``--steps`` steps are timed and scaled to the full run. All three give the same
  states (``tests/test_reservoir.py``);
* **per rho**, the readouts: ``memory_capacity`` in full (the simulation plus 5 ``RidgeCV`` fits
  over 60 delays), so the fits' share is the difference.

The markdown table goes to stdout and ``bench/out/reservoir.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectomics.build import build_default_graph  # noqa: E402
from graphnet.memory_capacity import input_sequences, memory_capacity  # noqa: E402
from graphnet.plan import plan_network  # noqa: E402
from graphnet.reservoir import (BACKENDS, ReservoirConfig, connectome_reservoir,  # noqa: E402
                                spectral_radius)

MC_STEPS = 500 + 2000 + 1000
MC_BATCH = 5
FER_IMAGES, FER_BATCH, FER_STEPS = 32298, 512, 20


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per simulation (default 300; quick 60)")
    ap.add_argument("--repeats", type=int, default=3)
    ns = ap.parse_args(argv)
    steps = ns.steps or (60 if ns.quick else 300)
    torch.set_num_threads(1)
    graph = build_default_graph()
    rows: list[tuple[str, str, float, str]] = []

    # -- per network --------------------------------------------------------------------------
    for null in ("connectome", "block_random", "degree_shuffle", "weight_shuffle"):
        t = best_of(lambda: plan_network(graph, mask=null, seed=1), 1 if ns.quick else ns.repeats)
        rows.append(("per network", f"network plan, {null}", t, ""))
    plan = plan_network(graph)
    w = plan.count_matrix()
    t_arpack = best_of(lambda: spectral_radius(w), ns.repeats)
    t_dense = best_of(lambda: np.linalg.eigvals(w.toarray()), 1 if ns.quick else ns.repeats)
    rows.append(("per network", "spectral radius, ARPACK (eigs, k=1)", t_arpack, f"{t_dense / t_arpack:.0f}x"))
    rows.append(("per network", "spectral radius, dense eigvals (baseline)", t_dense, ""))
    radius = spectral_radius(w)

    # -- per rho: simulation --------------------------------------------------------------------
    res = {b: connectome_reservoir(plan, ReservoirConfig(rho=0.9, backend=b), radius=radius) for b in BACKENDS}
    u, win = input_sequences(range(1, MC_BATCH + 1), steps, res["torch"].n_inputs_units, 0.1)
    img = np.random.default_rng(0).standard_normal((FER_BATCH, 2304)).astype(np.float32)
    proj = np.random.default_rng(1).standard_normal((res["torch"].n_inputs_units, 2304)) / 48
    fer_steps = max(2, steps // 15)
    mc_t, fer_t = {}, {}
    for _ in range(ns.repeats):           # interleaved, so each backend sees the same load
        for b in BACKENDS:
            t0 = time.perf_counter()
            res[b].run(u, win)
            mc_t[b] = min(mc_t.get(b, np.inf), (time.perf_counter() - t0) / steps * MC_STEPS)
            t0 = time.perf_counter()
            res[b].run_constant(img, proj, fer_steps)
            per_step = (time.perf_counter() - t0) / fer_steps
            fer_t[b] = min(fer_t.get(b, np.inf), per_step * FER_STEPS * np.ceil(FER_IMAGES / FER_BATCH))
    for name, tab, what in (("memory-capacity run", mc_t, f"{MC_BATCH} sequences x {MC_STEPS} steps"),
                            ("FER-2013 pass", fer_t, f"{FER_IMAGES} images x {FER_STEPS} steps")):
        for b in BACKENDS:
            label = {"torch": "torch CSR", "scipy": "scipy CSR", "dense": "dense torch (baseline)"}[b]
            speed = "" if b == "dense" else f"{tab['dense'] / tab[b]:.1f}x"
            rows.append(("per rho", f"{name} ({what}), {label}", tab[b], speed))

    # -- per rho: simulation + readout fits ---------------------------------------------------
    if ns.quick:
        t_mc = best_of(lambda: memory_capacity(res["torch"], range(1, 6), max_delay=20, washout=50,
                                               n_train=300, n_test=150), 1)
        rows.append(("per rho", "memory_capacity, quick settings (5 seeds, K=20, 500 steps)", t_mc, ""))
    else:
        t_mc = best_of(lambda: memory_capacity(res["torch"], range(1, 6), max_delay=60), 1)
        rows.append(("per rho", "memory_capacity in full (torch run + 5 RidgeCV fits, K=60)", t_mc, ""))
        rows.append(("per rho", "  of which the RidgeCV fits (full minus the torch run)",
                     t_mc - mc_t["torch"], ""))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end; "
             f"torch {torch.__version__}, 1 thread, float32; {steps} timed steps scaled to full runs.", "",
             "| scope | what | seconds | speed-up vs baseline |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {s} | {w_} | {t:.3f} | {x} |" for s, w_, t, x in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "reservoir.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
