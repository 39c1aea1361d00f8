"""Training throughput vs torch thread count on a machine where another process keeps a core busy.

    python bench/threads_busy.py                        # ~2.5 min on 2 cores
    python bench/threads_busy.py --presets paper --seconds 10

For each condition (``idle``: nothing added; ``busy``: one extra ``python -c 'while 1: pass'``
process) and each preset (``paper``, ``wide``), times training steps (batched augmentation,
forward, backward, AdamW, plasticity step; random images, batch 128) with torch's own default
thread count, with 1 and 2 threads, and with :func:`pipelines.runtime.default_threads` (what
``--threads 0`` picks). Each variant runs a fixed number of steps or ``--seconds``, whichever
ends first, after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.augment import BatchAugment, normalize, to_float  # noqa: E402
from pipelines.config import PRESETS, Config  # noqa: E402
from pipelines.models import build_model  # noqa: E402
from pipelines.runtime import default_threads  # noqa: E402


def images_per_second(cfg: Config, graph, threads: int, steps: int, seconds: float, batch: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(cfg, graph).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    aug = BatchAugment(cfg.augment_config())
    X = torch.randint(0, 256, (1024, 1, 48, 48), dtype=torch.uint8, generator=g)
    Y = torch.randint(0, 7, (1024,), generator=g)
    done, t0 = 0, 0.0
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        idx = torch.randint(0, 1024, (batch,), generator=g)
        x = normalize(aug(to_float(X[idx]), g)).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), Y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.plasticity_step()
        if i >= 2:
            done += 1
            if time.perf_counter() - t0 > seconds:
                break
    return done * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="paper,wide")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=8.0, help="cap per variant")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cache_root", default="data_cache")
    a = ap.parse_args(argv)
    from connectomics.build import build_default_graph

    graph = build_default_graph(a.cache_root)
    torch_default = torch.get_num_threads()
    print(f"torch {torch.__version__}; torch default threads {torch_default}; batch {a.batch}")
    print(f"{'condition':9s} {'preset':6s} {'threads':>18s} {'img/s':>8s}")
    for condition in ("idle", "busy"):
        hog = None
        if condition == "busy":
            hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
            time.sleep(3)
        try:
            auto = default_threads()
            for preset in a.presets.split(","):
                cfg = replace(Config(), **PRESETS[preset])
                for label, th in ((f"torch default ({torch_default})", torch_default), ("1", 1), ("2", 2),
                                  (f"auto ({auto})", auto)):
                    r = images_per_second(cfg, graph, th, a.steps, a.seconds, a.batch)
                    print(f"{condition:9s} {preset:6s} {label:>18s} {r:8.0f}", flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
