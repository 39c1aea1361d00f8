"""Training throughput of the BioNIC paper preset: this toolkit's pipeline vs a plain PyTorch one.

    python bench/train_throughput.py                 # default: 10 timed steps per variant, ~1 min on 2 cores
    python bench/train_throughput.py --steps 30 --batch 256 --threads 1,2 --compile on

Both pipelines train the same model (same weights, same math: forward, cross-entropy, backward,
AdamW step, Hebbian/homeostatic ``plasticity_step``) at the same batch size:

* **plain** -- a ``Dataset`` over the uint8 images with per-sample CPU augmentation (PIL affine
  for rotation/scale/shift, numpy flip, brightness/contrast, random erasing), a ``DataLoader``
  (shuffle, ``num_workers=0``: the machine has 2 shared cores), NCHW tensors, torch's default
  threads, the model as the reference front end defines it (``LateralInhibition2d`` via ``avg_pool3d``);
* **toolkit** -- the whole split as one uint8 tensor on the device, batched augmentation with
  independent per-image parameters (:mod:`pipelines.augment`), the model as ``pipelines.train``
  runs it: lateral inhibition as one fixed 3x3 convolution (same numbers, see
  ``pipelines.frontend.FastLateralInhibition2d``), optionally ``channels_last``, a thread
  count, fused AdamW where available, and (``--compile on``) ``torch.compile``. (Both pipelines
  use the CBAM and adaptive-pool implementations of :mod:`pipelines.frontend`, which keep the conv
  of CBAM on the channels_last path and pool by two small matmuls.)

Prints one row per variant: images/s, ms per step split into data and model time, and the ratio
to the plain pipeline. The toolkit variants run in the precision `pipelines.train` would choose
(`pipelines.runtime.resolve_runtime`: bf16 autocast on CUDA, float32 on the CPU unless `--amp bf16`).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.augment import AugmentConfig, BatchAugment, normalize, to_float  # noqa: E402
from pipelines.config import PRESETS, Config  # noqa: E402
from pipelines.models import build_model, count_parameters  # noqa: E402
from pipelines.runtime import resolve_runtime  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "fer2013"


# ------------------------------------------------------------------------------------------------
# the plain pipeline
# ------------------------------------------------------------------------------------------------
class PlainFER(torch.utils.data.Dataset):
    """Per-sample CPU augmentation, the usual way (torchvision-free)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, seed: int = 0):
        self.images, self.labels, self.cfg = images, labels, cfg
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        c, r = self.cfg, self.rng
        img = self.images[i]
        if r.random() < c.flip:
            img = img[:, ::-1]
        ang = math.radians(r.uniform(-c.rotate_deg, c.rotate_deg))
        s = 1.0 / r.uniform(1 - c.scale, 1 + c.scale)
        tx, ty = r.uniform(-c.translate, c.translate) * 48, r.uniform(-c.translate, c.translate) * 48
        cos, sin = math.cos(ang) * s, math.sin(ang) * s
        cx = cy = 23.5   # rotate/scale about the centre, then shift
        coeffs = (cos, -sin, cx - cos * cx + sin * cy + tx, sin, cos, cy - sin * cx - cos * cy + ty)
        im = Image.fromarray(np.ascontiguousarray(img)).transform((48, 48), Image.AFFINE, coeffs,
                                                                  resample=Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32) / 255.0
        m = x.mean()
        x = (x - m) * r.uniform(1 - c.contrast, 1 + c.contrast) + m + r.uniform(-c.brightness, c.brightness)
        x = np.clip(x, 0, 1)
        if r.random() < c.erase_p:
            area = r.uniform(*c.erase_area) * 48 * 48
            ratio = math.exp(r.uniform(math.log(c.erase_ratio[0]), math.log(c.erase_ratio[1])))
            h = int(min(48, max(1, round(math.sqrt(area * ratio)))))
            w = int(min(48, max(1, round(math.sqrt(area / ratio)))))
            y0, x0 = r.integers(0, 49 - h), r.integers(0, 49 - w)
            x[y0:y0 + h, x0:x0 + w] = r.random()
        x = (x - 0.5) / 0.25
        return torch.from_numpy(x[None]), int(self.labels[i])


def reference_lateral(model: nn.Module) -> nn.Module:
    """Swap the fast lateral inhibition back to graphnet's own module (same parameters)."""
    from pipelines.frontend import FastLateralInhibition2d, LateralInhibition2d

    fast = FastLateralInhibition2d
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, fast):
                setattr(mod, cname, LateralInhibition2d(size=child.size, spatial=child.spatial,
                                                        alpha=child.alpha, beta=child.beta, k=child.k))
    return model


def make_optimizer(model: nn.Module, fused: bool) -> torch.optim.Optimizer:
    from pipelines.train import param_groups

    groups = param_groups(model, 1e-4)
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=1e-3, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.AdamW(groups, lr=1e-3)


def run_plain(model, images, labels, batch, steps, warmup, aug_cfg, threads) -> dict:
    torch.set_num_threads(threads)
    model.train()
    opt = make_optimizer(model, fused=False)
    loader = torch.utils.data.DataLoader(PlainFER(images, labels, aug_cfg), batch_size=batch,
                                         shuffle=True, num_workers=0, drop_last=True)
    it = iter(loader)
    t_data = t_model = 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.plasticity_step()
        t2 = time.perf_counter()
        if i >= warmup:
            t_data += t1 - t0
            t_model += t2 - t1
    return {"data_ms": 1e3 * t_data / steps, "model_ms": 1e3 * t_model / steps,
            "img_s": steps * batch / (t_data + t_model)}


def run_toolkit(model, images, labels, batch, steps, warmup, aug_cfg, threads, channels_last,
                compile_, dev, amp_dtype=None) -> dict:
    torch.set_num_threads(threads)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, fused=True)
    net = torch.compile(model) if compile_ else model
    X = torch.as_tensor(images).unsqueeze(1).to(dev)
    Y = torch.as_tensor(labels.astype(np.int64)).to(dev)
    g_shuffle = torch.Generator().manual_seed(0)
    g_aug = torch.Generator(device=dev).manual_seed(1)
    aug = BatchAugment(aug_cfg)
    perm, pos = torch.randperm(len(Y), generator=g_shuffle).to(dev), 0
    t_data = t_model = 0.0
    t_compile = 0.0
    for i in range(warmup + steps):
        sync(dev)
        t0 = time.perf_counter()
        if pos + batch > len(Y):
            perm, pos = torch.randperm(len(Y), generator=g_shuffle).to(dev), 0
        idx = perm[pos:pos + batch]
        pos += batch
        x = normalize(aug(to_float(X[idx]), g_aug))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = Y[idx]
        sync(dev)
        t1 = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.plasticity_step()
        sync(dev)
        t2 = time.perf_counter()
        if i == 0:
            t_compile = t2 - t0
        if i >= warmup:
            t_data += t1 - t0
            t_model += t2 - t1
    return {"data_ms": 1e3 * t_data / steps, "model_ms": 1e3 * t_model / steps,
            "img_s": steps * batch / (t_data + t_model), "first_step_s": t_compile}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def load_data(path: str | None, cache_root: str) -> tuple[np.ndarray, np.ndarray, str]:
    from pipelines.fer2013 import load_fer2013

    candidates = [path] if path else [str(SHARED / "fer2013.csv.gz"), str(SHARED / "sample.csv")]
    for p in candidates:
        if p and Path(p).exists():
            ds = load_fer2013(p, cache_root)
            x, y = ds.split("Training")
            return np.ascontiguousarray(x), y, p
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (4096, 48, 48), dtype=np.uint8), rng.integers(0, 7, 4096).astype(np.uint8), "random"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", default="1",
                    help="comma list of torch thread counts, each timed for both pipelines (default 1: "
                         "on the shared 2-core machine 2 OpenMP threads ran 2-5x slower than 1; try 1,2)")
    ap.add_argument("--channels_last", default="both", choices=("on", "off", "both"))
    ap.add_argument("--compile", default="off", choices=("on", "off"),
                    help="also time torch.compile (CPU: ~1-2 min of compilation on 2 cores)")
    ap.add_argument("--data", default=None, help="FER-2013 CSV/folder (default: ../shared's, else random)")
    ap.add_argument("--graph", default="", help="graph folder (default: the embedded surrogate column)")
    ap.add_argument("--cache_root", default="data_cache")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"),
                    help="as pipelines.train's --amp (auto: bf16 on CUDA only)")
    a = ap.parse_args(argv)
    rt = resolve_runtime(a.device, amp=a.amp, threads=1)   # the trainer's device/precision rule
    dev = rt.device
    default_threads = torch.get_num_threads()
    threads = [int(t) for t in a.threads.split(",")]

    images, labels, src = load_data(a.data, a.cache_root)
    if a.graph:
        from connectomics import load_graph
        graph = load_graph(a.graph)
    else:
        from pipelines.train import default_graph
        graph = default_graph(a.cache_root)
    cfg = replace(Config(), **PRESETS["paper"])
    torch.manual_seed(0)
    base = build_model(cfg, graph)
    n_params = count_parameters(base)["total"]
    aug_cfg = cfg.augment_config()
    print(f"paper preset: {n_params:,} parameters; batch {a.batch}; {len(labels)} training images "
          f"from {src}; device {dev}; torch {torch.__version__}; {default_threads} default threads; "
          f"{a.steps} timed steps after {a.warmup} warm-up")

    rows = []
    plain_model = reference_lateral(copy.deepcopy(base))
    n_plain = 0
    if dev.type == "cpu":
        for th in threads:
            t = time.perf_counter()
            r = run_plain(copy.deepcopy(plain_model), images, labels, a.batch, a.steps, a.warmup, aug_cfg, th)
            rows.append(("plain: DataLoader + per-sample PIL/numpy aug, NCHW", th, r))
            n_plain += 1
            print(f"  plain ({th} thr) done in {time.perf_counter() - t:.0f} s", flush=True)
    layouts = {"on": [True], "off": [False], "both": [False, True]}[a.channels_last]
    variants = [(th, cl, False) for th in threads for cl in layouts]
    if a.compile == "on":
        variants.append((max(threads), layouts[-1], True))
    for th, cl, comp in variants:
        t = time.perf_counter()
        m = copy.deepcopy(base).to(dev)
        r = run_toolkit(m, images, labels, a.batch, a.steps, a.warmup, aug_cfg, th, cl, comp, dev,
                        rt.amp_dtype)
        name = ("toolkit: device data + batched aug" + (", channels_last" if cl else ", NCHW")
                + (", torch.compile" if comp else "") + (", bf16" if rt.amp_dtype else ""))
        rows.append((name, th, r))
        print(f"  {name} ({th} thr) done in {time.perf_counter() - t:.0f} s"
              + (f" (first step {r['first_step_s']:.0f} s)" if comp else ""), flush=True)
    torch.set_num_threads(default_threads)

    plain_best = max(rows[:n_plain], key=lambda row: row[2]["img_s"]) if n_plain else None
    ref = plain_best[2]["img_s"] if plain_best else None
    print()
    print(f"{'pipeline':74s} {'thr':>3s} {'img/s':>8s} {'data ms':>8s} {'model ms':>9s} {'vs plain':>9s}")
    for name, th, r in rows:
        ratio = f"{r['img_s'] / ref:8.2f}x" if ref else "      n/a"
        print(f"{name:74s} {th:3d} {r['img_s']:8.0f} {r['data_ms']:8.1f} {r['model_ms']:9.1f} {ratio}")
    if ref:
        best = max(rows[n_plain:], key=lambda row: row[2]["img_s"])
        p = plain_best[2]
        print(f"\nbest toolkit variant: {best[0]} ({best[1]} threads): {best[2]['img_s'] / ref:.2f}x the "
              f"best plain variant's images/s ({plain_best[1]} threads); model step "
              f"{p['model_ms'] / best[2]['model_ms']:.2f}x faster, data {p['data_ms'] / max(best[2]['data_ms'], 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
