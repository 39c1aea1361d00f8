"""Cost of the column's weight schemes and dynamics against the ``paper`` preset, in one run.

    python bench/column_schemes.py                     # 1 thread, batch 128, 12 timed steps each
    python bench/column_schemes.py --threads 2 --steps 30 --device cuda

Each variant is the whole model ``pipelines.train`` trains (conv front end, column, head) on the
real MICrONS column (the bundled default graph), timed over optimiser steps on random images
(forward, cross-entropy, backward, AdamW step, ``plasticity_step``): the cost of a step does not
depend on the pixels. The baseline is the ``paper`` preset (free weights, feedforward A-D, its
dense backend); the table gives ms per step, images/s, the ratio to the baseline, the estimated
seconds per epoch of FER-2013's 28,709 training images, and the column's trainable parameters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectomics.build import build_default_graph  # noqa: E402
from pipelines.config import make_config  # noqa: E402
from pipelines.models import build_model  # noqa: E402

TRAIN_IMAGES = 28_709

#: name -> config overrides (on top of a preset)
VARIANTS: dict[str, dict] = {
    "paper (baseline: free, feedforward, dense)": {"preset": "paper"},
    "paper, sparse backend": {"preset": "paper", "column_backend": "sparse"},
    "paper, counts": {"preset": "paper", "weights": "counts", "hebbian_rate": 0.0},
    "recurrent, counts, sparse": {"preset": "recurrent", "column_backend": "sparse"},
    "recurrent, counts, dense": {"preset": "recurrent", "column_backend": "dense"},
    "recurrent, free, sparse": {"preset": "recurrent", "weights": "free", "column_backend": "sparse"},
}


def time_variant(over: dict, graph, batch: int, steps: int, warmup: int, device: torch.device) -> dict:
    cfg = make_config(over)
    model = build_model(cfg, graph, device=device).train()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 48, 48, generator=g).to(device)
    y = torch.randint(0, 7, (batch,), generator=g).to(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.plasticity_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    ms = 1000 * times[len(times) // 2]
    return {"ms": ms, "img_s": batch / (ms / 1000),
            "column_params": model.column.parameter_counts()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    graph = build_default_graph()
    print(f"device {dev}, {a.threads} thread(s), batch {a.batch}, median of {a.steps} steps "
          f"after {a.warmup}; torch {torch.__version__}")
    rows, base = [], None
    for name, over in VARIANTS.items():
        r = time_variant(over, graph, a.batch, a.steps, a.warmup, dev)
        base = base or r["ms"]
        c = r["column_params"]
        conn = c.get("projections", c.get("recurrent"))
        rows.append((name, r["ms"], r["img_s"], r["ms"] / base,
                     TRAIN_IMAGES / a.batch * r["ms"] / 1000, conn, c["total"]))
    print("\n| variant | ms/step | images/s | x paper | s/epoch (est.) | connectome params | column params |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, ms, ips, ratio, epoch_s, conn, total in rows:
        print(f"| {name} | {ms:.1f} | {ips:.0f} | {ratio:.2f} | {epoch_s:.0f} | {conn:,} | {total:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
