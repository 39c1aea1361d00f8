"""Where and how a model runs: device, precision, compilation, memory layout, CPU threads.

One resolver, :func:`resolve_runtime`, turns the config's ``auto``/``on``/``off`` switches into a
:class:`Runtime`; ``pipelines.train`` (training *and* its per-epoch and final evaluations),
``pipelines.evaluate`` and ``bench/train_throughput.py`` all use it, so a run is evaluated in the
precision it was trained in.

Precision rule: ``amp auto`` is bf16 autocast on CUDA and float32 on the CPU; ``amp bf16`` is
bf16 autocast on any device (on a CPU without AVX512-BF16/AMX it is slow, but it is what was asked
for, for training and evaluation alike); ``amp off`` is float32 everywhere.

Threads: ``threads 0`` (the default) picks :func:`default_threads`: the CPUs this process may use
(``os.sched_getaffinity``) minus the CPUs other programs keep busy (the larger of the 1-minute
load average and a 0.2 s sample of ``/proc/stat``, rounded), shared by the local processes, at
least 1. OpenMP threads that wait on a descheduled
sibling collapse throughput (measured: 24 vs 646 images/s on 2 cores with one core busy,
``docs/benchmarks.md``), while one thread too few costs at most a fraction, so the rule errs low.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

AMP_CHOICES = ("auto", "bf16", "off")
SWITCH_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one process."""

    device: torch.device
    amp_dtype: torch.dtype | None     # autocast dtype, None = float32
    compile: bool                     # torch.compile the model
    channels_last: bool               # NHWC memory layout for the convolutions
    deterministic: bool               # torch.use_deterministic_algorithms
    threads: int                      # torch CPU threads (intra-op)

    @property
    def amp(self) -> str:
        """``bf16`` or ``off`` (for banners and summaries)."""
        return "bf16" if self.amp_dtype is torch.bfloat16 else "off"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this runtime (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` gets the
    local rank as its index. A device this torch cannot use is a ``ValueError`` naming ``--device``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available to this torch ({torch.__version__}"
                             f"{', a CPU-only build' if torch.version.cuda is None else ''}); use "
                             "--device cpu or auto")
        dev = torch.device(f"cuda:{local_rank}") if dev.index is None else dev
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: no CUDA device {dev.index} (this machine has "
                             f"{torch.cuda.device_count()})")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    return dev


def available_cpus() -> int:
    """CPUs this process may run on (affinity mask; ``os.cpu_count()`` where unsupported)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def busy_cpus(sample_s: float = 0.2) -> float:
    """CPUs kept busy by other programs: the larger of the 1-minute load average and the busy
    share of all CPUs over ``sample_s`` seconds (``/proc/stat``, Linux; 0 elsewhere)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover
        load = 0.0

    def snapshot() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)   # idle + iowait
        return sum(vals), idle

    a = snapshot()
    if a is None or sample_s <= 0:
        return load
    import time

    time.sleep(sample_s)
    b = snapshot()
    total, idle = b[0] - a[0], b[1] - a[1]
    sampled = (os.cpu_count() or 1) * (total - idle) / total if total > 0 else 0.0
    return max(load, sampled)


def default_threads(local_processes: int = 1, busy: float | None = None,
                    cpus: int | None = None) -> int:
    """Torch threads per process when none are given: the ``round(cpus - busy)`` free CPUs shared
    by ``local_processes`` processes, at least 1 (``busy``: :func:`busy_cpus` by default)."""
    cpus = available_cpus() if cpus is None else cpus
    busy = busy_cpus() if busy is None else busy
    free = int(max(0.0, cpus - busy) + 0.5)
    return max(1, min(cpus, free) // max(1, local_processes))


def resolve_runtime(device: str = "auto", amp: str = "auto", compile: str = "auto",
                    channels_last: str = "auto", deterministic: str = "auto", threads: int = 0,
                    local_rank: int = 0, local_processes: int = 1) -> Runtime:
    """Resolve the switches (module doc) for this process."""
    for name, value, allowed in (("amp", amp, AMP_CHOICES), ("compile", compile, SWITCH_CHOICES),
                                 ("channels_last", channels_last, SWITCH_CHOICES),
                                 ("deterministic", deterministic, SWITCH_CHOICES)):
        if value not in allowed:
            raise ValueError(f"--{name} {value!r}: choose one of {', '.join(allowed)}")
    dev = resolve_device(device, local_rank)
    cuda = dev.type == "cuda"
    bf16 = amp == "bf16" or (amp == "auto" and cuda)
    return Runtime(
        device=dev,
        amp_dtype=torch.bfloat16 if bf16 else None,
        compile={"auto": cuda, "on": True, "off": False}[compile],
        channels_last={"auto": True, "on": True, "off": False}[channels_last],
        deterministic={"auto": not cuda, "on": True, "off": False}[deterministic],
        threads=threads if threads > 0 else default_threads(local_processes),
    )


def runtime_of(cfg, device: str | None = None, local_rank: int = 0, local_processes: int = 1,
               threads: int | None = None) -> Runtime:
    """:func:`resolve_runtime` for a :class:`pipelines.config.Config` (``device``/``threads``
    override the config's)."""
    return resolve_runtime(device or cfg.device, cfg.amp, cfg.compile, cfg.channels_last,
                           cfg.deterministic, cfg.threads if threads is None else threads,
                           local_rank, local_processes)


@contextlib.contextmanager
def dynamo_fallback() -> Iterator[None]:
    """Within the block, a ``torch.compile``'d model falls back to eager on a compiler error
    (``torch._dynamo.config.suppress_errors``), restored on exit."""
    import torch._dynamo as dynamo

    with dynamo.config.patch(suppress_errors=True):
        yield


def configure_torch(runtime: Runtime) -> None:
    """Apply ``runtime`` to torch's process-wide settings: CPU threads, deterministic algorithms
    (and cuDNN's), TF32 matmuls on CUDA. :func:`restore_torch_settings` undoes the first two."""
    torch.set_num_threads(runtime.threads)
    cuda = runtime.device.type == "cuda"
    if runtime.deterministic:
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif cuda:
        torch.backends.cudnn.benchmark = True
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


@contextlib.contextmanager
def restore_torch_settings() -> Iterator[None]:
    """Within the block :func:`configure_torch` may change the thread count and the deterministic
    mode; both are restored on exit (a run in a test or a notebook leaves the process as it was)."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
