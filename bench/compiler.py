"""Benchmark: dense MaskedLinear vs SparseLinear, forward + backward, and the automatic choice.

    python bench/compiler.py            # default grid, CPU (+ CUDA when available), ~5 min
    python bench/compiler.py --quick    # small grid, seconds
    python bench/compiler.py --full     # also the points skipped for time (not those for memory)

For each square layer ``n x n`` (n = 300, 1k ... 100k neurons; 300 is the column's layer size) and
density (0.1 % ... 20 %), batch 256, float32:

* time: wall time of ``y = layer(x); y.backward(g)`` (gradients of input and weights), the minimum
  over steps with dense and sparse steps interleaved so both see the same machine load (the
  machine may be shared); single-threaded by default (``--threads``);
* memory: the layer's parameters and buffers plus the peak allocated above them in one step
  (CUDA: ``max_memory_allocated``; CPU: peak RSS via ``/proc/self/clear_refs`` + ``VmHWM``, with
  glibc's mmap threshold lowered for that step so allocations show in RSS).

Memory and time are estimated first: points over ``--mem-budget-gb`` are skipped (reason printed;
dense 100k x 100k needs ~160 GB), as are, unless ``--full``, points estimated slower than
``--max-iter-s`` per step (a size's sparse estimate is extrapolated from its previous density) and
points left when ``--time-budget-s`` is spent. Then: the crossover density per size (where sparse and dense times are equal,
log-log interpolation; paste it into ``graphnet/backend.py``), the automatic choice at every point
(within 10 % of the faster?), and the bionic-sized column (266 -> 349 -> 185 -> 383 cells, ~10 %
density) compiled dense, sparse and auto. The markdown table goes to stdout and
``bench/out/compiler.md``.
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphnet import MaskedLinear, SparseLinear, choose_backend, compile_column  # noqa: E402
from graphnet.backend import CROSSOVER, device_memory_bytes  # noqa: E402
from graphnet.spec import ColumnSpec  # noqa: E402

GB = 1024 ** 3
# rough cost model, only to decide what to skip (not reported as results)
DENSE_BYTES_PER_ENTRY = 4 + 4 + 4 + 4 + 1          # weight, grad, effective weight, its grad, mask
SPARSE_BYTES_PER_EDGE = 4 * 4 + 8 * 4              # w, grad, w[perm], sampled values; 4 index arrays
CPU_DENSE_FLOPS, CPU_SPARSE_FLOPS = 25e9, 4e9       # per thread, measured order of magnitude
CUDA_DENSE_FLOPS, CUDA_SPARSE_FLOPS = 20e12, 100e9


# ------------------------------------------------------------------------------------------------
class Malloc:
    """glibc switches. Timing runs with the mmap threshold glibc's dynamic rule reaches after
    warm-up (32 MiB); a memory reading switches to a 64 KiB threshold and ``malloc_trim`` so
    freed memory leaves RSS and the step's allocations show in its peak RSS."""

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self) -> None:
        try:
            import ctypes

            self.libc = ctypes.CDLL("libc.so.6")
            self.ok = bool(self.libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20))
        except (OSError, AttributeError):
            self.libc, self.ok = None, False
        self.timing()

    def timing(self) -> None:
        if self.ok:
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 32 << 20)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 64 << 20)

    def memory(self) -> None:
        if self.ok:
            self.libc.mallopt(self.M_MMAP_THRESHOLD, 64 << 10)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 64 << 10)
            self.libc.malloc_trim(0)


MALLOC: Malloc | None = None


def rss_bytes(field: str = "VmRSS") -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tensor_bytes(module: torch.nn.Module) -> int:
    ts = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in ts)


def peak_step_bytes(module: torch.nn.Module, zero, step, device: torch.device) -> float | None:
    """The module's parameters and buffers plus the peak allocated above them during one
    forward + backward (``zero()`` first drops the gradients). CUDA: allocator statistics;
    CPU: peak RSS (``/proc/self/clear_refs`` + ``VmHWM``) with :class:`Malloc` in memory mode."""
    zero()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base + tensor_bytes(module))
    if MALLOC is None or not MALLOC.ok:
        return None
    MALLOC.memory()
    try:
        r0 = rss_bytes()
        if r0 is None or not reset_peak_rss():
            return None
        step()
        hwm = rss_bytes("VmHWM")
    finally:
        MALLOC.timing()
    return None if hwm is None else float(max(0, hwm - r0) + tensor_bytes(module))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_edges(n: int, density: float, gen: np.random.Generator) -> np.ndarray:
    """``(2, E)`` distinct random pairs, E ~ density * n^2 in expectation, without an n^2 array."""
    total = n * n
    draws = int(round(-total * math.log1p(-density))) if density < 1 else total
    keys = np.unique(gen.integers(0, total, size=draws, dtype=np.int64))
    return np.stack([keys % n, keys // n])  # [pre, post]


def build(kind: str, n: int, density: float, device: torch.device, seed: int = 0):
    gen = np.random.default_rng(seed)
    ei = torch.as_tensor(random_edges(n, density, gen))
    if kind == "sparse":
        return SparseLinear(n, n, ei, bias=True, device=device), ei.shape[1]
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    mask[ei[1].to(device), ei[0].to(device)] = True
    return MaskedLinear(n, n, mask, bias=True, device=device), ei.shape[1]


class Runner:
    """One layer with its input and output gradient, ready for timed forward+backward steps."""

    def __init__(self, layer, batch: int, device: torch.device) -> None:
        self.layer, self.device = layer, device
        self.x = torch.randn(batch, layer.in_features, device=device, requires_grad=True)
        self.g = torch.randn(batch, layer.out_features, device=device)
        self.times: list[float] = []

    def zero(self) -> None:
        self.layer.zero_grad(set_to_none=True)
        self.x.grad = None

    def peak(self) -> float | None:
        return peak_step_bytes(self.layer, self.zero, lambda: self.step(record=False), self.device)

    def step(self, record: bool = True) -> None:
        self.zero()
        sync(self.device)
        t0 = time.perf_counter()
        self.layer(self.x).backward(self.g)
        sync(self.device)
        dt = time.perf_counter() - t0
        if record:
            self.times.append(dt)
        else:
            self.warm_s = dt


def estimate(kind: str, n: int, density: float, batch: int, device: torch.device) -> tuple[float, float]:
    """(bytes, seconds per iteration), rough."""
    act = 4 * batch * n * 6
    if kind == "dense":
        flops = 3 * 2 * batch * n * n
        speed = CUDA_DENSE_FLOPS if device.type == "cuda" else CPU_DENSE_FLOPS * torch.get_num_threads()
        return n * n * DENSE_BYTES_PER_ENTRY + act, flops / speed
    e = density * n * n
    speed = CUDA_SPARSE_FLOPS if device.type == "cuda" else CPU_SPARSE_FLOPS * torch.get_num_threads()
    return e * SPARSE_BYTES_PER_EDGE + 16 * n + act, 3 * 2 * batch * e / speed


# ------------------------------------------------------------------------------------------------
def plan(kind, n, density, args, device, budget_gb, measured_s: float = 0.0) -> tuple[str | None, float]:
    """(skip reason or None, estimated seconds per step). ``measured_s``: an extrapolation from
    the same size's last measured sparse point (the larger estimate is used)."""
    need, secs = estimate(kind, n, density, args.batch, device)
    secs = max(secs, measured_s)
    if need > budget_gb * GB:
        return f"est. {need / GB:.1f} GB > budget {budget_gb:.1f} GB", secs
    if args.full:
        return None, secs
    if secs > args.max_iter_s:
        return f"est. {secs:.0f} s/iter > --max-iter-s {args.max_iter_s:g} (use --full)", secs
    if time.time() + 3 * secs > args.deadline:
        return f"--time-budget-s {args.time_budget_s:g} used up (use --full)", secs
    return None, secs


def measure_size(n, densities, args, device, log, budget_gb) -> tuple[list[dict], list[dict]]:
    """Dense and sparse at every density, their steps interleaved (d, s, d, s, ...) so both see
    the same machine load; time = min over repeats (after one warm-up each). The dense step does
    not depend on the density (dense bool mask): where it is estimated over 1 s it is timed only
    with the first density, and every density is compared with the size's best dense step."""
    dskip, dsecs = plan("dense", n, densities[0], args, device, budget_gb)
    dense_runner, dense_peak, dense_edges = None, None, None
    if dskip is None:
        layer, dense_edges = build("dense", n, densities[0], device)
        dense_runner = Runner(layer, args.batch, device)
        dense_peak = dense_runner.peak()  # also the warm-up step
    dres, sres, all_dense = [], [], []
    last: tuple[float, float] | None = None  # (density, seconds) of the last timed sparse point
    for d in densities:
        # sparse time grows at least linearly in the edges: extrapolate from the last point
        extrap = last[1] * (d / last[0]) if last else 0.0
        sskip, ssecs = plan("sparse", n, d, args, device, budget_gb, extrap)
        sr = None
        if sskip is None:
            layer, edges = build("sparse", n, d, device)
            sr = Runner(layer, args.batch, device)
            speak = sr.peak()  # also the warm-up step
        time_dense = dense_runner is not None and (dsecs < 1 or not dense_runner.times)
        if time_dense:
            dense_runner.times = []
        # repeats from the measured warm-up steps: ~--point-budget-s per point, 1 to 30 steps
        step_s = (dense_runner.warm_s if time_dense else 0.0) + (sr.warm_s if sr is not None else 0.0)
        repeats = max(1, min(30, int(args.point_budget_s / max(step_s, 1e-4))))
        if step_s < 1:
            repeats = max(repeats, args.repeats)
        for _ in range(repeats):
            if time_dense:
                dense_runner.step()
            if sr is not None:
                sr.step()
        if time_dense:
            all_dense.extend(dense_runner.times)
        if sr is not None:
            last = (d, min(sr.times))
        dres.append({"skip": dskip} if dense_runner is None else
                    {"t": min(dense_runner.times), "peak": dense_peak, "edges": dense_edges})
        sres.append({"skip": sskip} if sr is None else
                    {"t": min(sr.times), "peak": speak, "edges": edges})
        fmt = lambda r: f"{r['t'] * 1e3:9.2f} ms" if "t" in r else "  skipped  "  # noqa: E731
        log(f"  {device.type} n={n:>6} d={d:<6g} dense {fmt(dres[-1])}  sparse {fmt(sres[-1])}"
            + (f"  E={edges:,}" if sr is not None else ""))
        del sr
        gc.collect()
    # the dense step does not depend on the density: compare every density with the best dense
    # step of this size (min over all its timed steps), which is the least load-disturbed one
    if dense_runner is not None and all_dense:
        for r in dres:
            r["t"] = min(all_dense)
    return dres, sres


def crossover_from(points: list[tuple[float, float, float]]) -> float | None:
    """points: (density, t_dense, t_sparse) sorted by density -> density where times are equal
    (log-log interpolation); 1.0 if sparse is faster everywhere, 0.0 if never, None if no data."""
    pts = [(d, td, ts) for d, td, ts in points if td and ts]
    if not pts:
        return None
    r = [(math.log(d), math.log(ts / td)) for d, td, ts in pts]
    if all(v < 0 for _, v in r):
        return 1.0
    if all(v >= 0 for _, v in r):
        return 0.0
    # last density where sparse still wins, then the first after it where it loses
    for (x0, y0), (x1, y1) in zip(r, r[1:]):
        if y0 < 0 <= y1:
            return math.exp(x0 + (x1 - x0) * (0 - y0) / (y1 - y0))
    return 0.0


def bionic_graph(seed: int = 0):
    from graphnet.testing import synthetic_graph

    pops = {("4P", "L4"): 266, ("23P", "L2/3"): 349, ("5P-IT", "L5"): 110, ("5P-ET", "L5"): 45,
            ("5P-NP", "L5"): 30, ("6P-IT", "L6"): 200, ("6P-CT", "L6"): 183,
            ("BC", "L2/3"): 30, ("MC", "L4"): 20, ("BC", "L5"): 20, ("MC", "L6"): 20}
    return synthetic_graph(pops, p=0.10, seed=seed)


def column_bench(args, device, log):
    g = bionic_graph()
    runs = []
    for backend in ("dense", "sparse", "auto"):
        spec = ColumnSpec.bionic(backend=backend, noise_std=0.0, hebbian_rate=0.0)
        col = compile_column(g, spec, in_features=1024, device=device).train()
        x = torch.randn(args.batch, 1024, device=device)
        col(x).sum().backward()  # warm-up
        peak = peak_step_bytes(col, lambda: col.zero_grad(set_to_none=True),
                               lambda: col(x).sum().backward(), device)
        runs.append([backend, col, x, [], peak])
    for _ in range(max(args.repeats, 20)):
        for r in runs:
            backend, col, x, times, _ = r
            col.zero_grad(set_to_none=True)
            sync(device)
            t0 = time.perf_counter()
            col(x).sum().backward()
            sync(device)
            times.append(time.perf_counter() - t0)
    rows = []
    for backend, col, x, times, peak in runs:
        t = min(times)
        log(f"  column {device.type} {backend:6s} t={t * 1e3:.2f} ms")
        rows.append((backend, t, peak, col.backends))
    return rows


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid (1k, 3k; 1 %%, 10 %%), 3 repeats")
    ap.add_argument("--full", action="store_true", help="do not skip points for time")
    ap.add_argument("--sizes", type=int, nargs="*")
    ap.add_argument("--densities", type=float, nargs="*")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-iter-s", type=float, default=12.0,
                    help="skip points estimated slower than this per step (unless --full)")
    ap.add_argument("--time-budget-s", type=float, default=240.0,
                    help="skip further grid points once this much time is spent (unless --full)")
    ap.add_argument("--point-budget-s", type=float, default=3.0,
                    help="timed steps per point ~ this / warm-up step time (1 to 30)")
    ap.add_argument("--mem-budget-gb", type=float, default=None,
                    help="default: 40%% of the device's memory, at most 8 GB on CPU")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: on a shared machine multi-threaded "
                         "timings of small ops are dominated by OpenMP barrier waits; 0 = torch's default)")
    ap.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "compiler.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [1000, 3000]
        args.densities = args.densities or [0.01, 0.1]
        args.repeats = min(args.repeats, 3)
    sizes = args.sizes or [300, 1000, 3000, 10000, 30000, 100000]
    dens = sorted(args.densities or [0.001, 0.01, 0.05, 0.1, 0.2])
    devices = [torch.device("cpu")]
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda":
        devices = [d for d in devices if d.type == "cuda"] or sys.exit("no CUDA device")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    global MALLOC
    MALLOC = Malloc()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.time()

    md = ["# graphnet compiler benchmark: MaskedLinear (dense) vs SparseLinear (CSR)", ""]
    md += [f"- forward + backward (input and weight gradients), batch {args.batch}, float32, "
           f"min over interleaved dense/sparse steps (up to 30 for fast points, at least {args.repeats} below 1 s/step, 1 for the slowest) after one warm-up each (the warm-up step is the memory reading); torch {torch.__version__}, "
           f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
           + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"),
           "- dense ms: the best dense step of that size (its computation does not depend on the density)",
           "- auto = `graphnet.choose_backend`; ok = auto's time within 10 % of the faster",
           "- peak MiB: the layer's parameters and buffers + the peak allocated above them in one "
           "forward + backward (" + ("CUDA: max_memory_allocated; " if torch.cuda.is_available() else "")
           + ("CPU: peak RSS with glibc's mmap threshold at 64 KiB for that step)" if MALLOC.ok
              else "CPU: not measurable here)"), ""]
    summary_cross = {}
    all_ok = True
    for device in devices:
        budget = args.mem_budget_gb or min(0.4 * device_memory_bytes(device) / GB,
                                           8.0 if device.type == "cpu" else 1e9)
        log(f"[{device.type}] memory budget {budget:.1f} GB")
        args.deadline = time.time() + args.time_budget_s  # per device
        md += [f"## {device.type}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
               "", f"memory budget {budget:.1f} GB", "",
               "| n | density | edges | dense ms | sparse ms | dense MiB | sparse MiB | faster | auto | auto/faster | ok |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        cross_rows = []
        for n in sizes:
            dres, sres = measure_size(n, dens, args, device, log, budget)
            pts = []
            for d, dense_res, sp in zip(dens, dres, sres):
                td, ts = dense_res.get("t"), sp.get("t")
                pts.append((d, td, ts))
                auto = choose_backend(n, n, d, device)
                if td and ts:
                    faster = "dense" if td <= ts else "sparse"
                    ratio = (td if auto == "dense" else ts) / min(td, ts)
                    ok = ratio <= 1.10
                    okc = "yes" if ok else "**NO**"
                    ratio_s = f"{ratio:.2f}"
                elif td or ts:
                    # only one fits/was timed: if the other does not fit memory, auto must pick
                    # the one that does; if it was skipped for time, the point cannot be judged
                    faster = ("dense" if td else "sparse") + " (only one timed)"
                    timed = "dense" if td else "sparse"
                    other = sp if td else dense_res
                    if "GB" in other.get("skip", ""):
                        ok = auto == timed
                        okc, ratio_s = ("yes" if ok else "**NO**"), ("1.00" if ok else "-")
                    else:
                        ok, okc, ratio_s = True, "n/a (other skipped for time)", "-"
                else:
                    faster, ok, okc, ratio_s = "-", True, "n/a", "-"
                all_ok &= ok
                edges = sp.get("edges") or int(round(d * n * n))
                fmt_t = lambda r: f"{r['t'] * 1e3:.2f}" if "t" in r else f"skipped: {r['skip']}"  # noqa: E731
                fmt_m = lambda r: (f"{r['peak'] / 2**20:.0f}" if r.get("peak") is not None else "n/a") if "t" in r else "-"  # noqa: E731
                md.append(f"| {n:,} | {d * 100:g} % | {edges:,} | {fmt_t(dense_res)} | {fmt_t(sp)} | "
                          f"{fmt_m(dense_res)} | {fmt_m(sp)} | {faster} | {auto} | {ratio_s} | {okc} |")
            c = crossover_from(pts)
            cross_rows.append((n, c))
        md += ["", "crossover density (sparse faster below; from these timings):", "",
               "| n | crossover | used by choose_backend |", "|---|---|---|"]
        for n, c in cross_rows:
            from graphnet.backend import crossover_density

            shown = "-" if c is None else (f"> {max(dens) * 100:g} % (sparse faster at every timed density)"
                                           if c >= 1.0 else "< lowest density" if c <= 0 else f"{c * 100:.3g} %")
            md.append(f"| {n:,} | {shown} | "
                      f"{crossover_density(n, n, device) * 100:.3g} % |")
        summary_cross[device.type] = [(n, c) for n, c in cross_rows if c is not None]
        col = column_bench(args, device, log)
        md += ["", "bionic-sized column (266 -> 349 -> 185 -> 383 units, p = 0.10, intra-layer on, "
               f"in_features 1024, batch {args.batch}, forward + backward of the whole column):", "",
               "| backend | ms | peak MiB | per-projection choice |", "|---|---|---|---|"]
        for backend, t, peak, bk in col:
            choice = ", ".join(f"{k}:{v[0]}" for k, v in bk.items())
            md.append(f"| {backend} | {t * 1e3:.2f} | {'n/a' if peak is None else f'{peak / 2**20:.0f}'} | {choice} |")
        md.append("")
    md += ["```python", "# measured crossover table (paste into graphnet/backend.py CROSSOVER)",
           "{" + ", ".join(f'"{k}": (' + ", ".join(f"({n}, {c:.4g})" for n, c in v) + ",)"
                           for k, v in summary_cross.items()) + "}",
           f"# in use: {CROSSOVER}", "```", "",
           f"auto choice within 10 % of the faster at every measured point: {'yes' if all_ok else 'NO'}",
           f"(total {time.time() - t_start:.0f} s)"]
    text = "\n".join(md)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    log(f"wrote {args.out}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
