"""Batched, on-device data augmentation with independent random parameters per image.

One call augments a whole batch ``(B, 1, H, W)`` float in [0, 1] without Python per image:

* geometry -- horizontal flip, rotation, isotropic scale and translation composed into one
  affine matrix per image and applied with a single ``affine_grid`` + ``grid_sample``
  (bilinear, border padding);
* photometry -- brightness (additive) and contrast (scaling about the image mean), clamped to [0, 1];
* random erasing -- with probability ``erase_p`` a rectangle of random area/aspect is filled
  with a random grey value (one per image).

Random parameters come from a seeded :class:`torch.Generator` living on the data's device, so a
run is reproducible; :meth:`BatchAugment.sample` draws the parameters of a whole (global) batch
and :meth:`BatchAugment.apply` applies any slice of them, which is how data-parallel ranks
augment their shard of a batch exactly as a single process would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    flip: float = 0.5            # probability of a horizontal flip
    rotate_deg: float = 10.0     # rotation uniform in [-r, r] degrees
    scale: float = 0.1           # scale uniform in [1 - s, 1 + s]
    translate: float = 0.1       # shift uniform in [-t, t] of the image size, per axis
    brightness: float = 0.2      # additive brightness uniform in [-b, b]
    contrast: float = 0.2        # contrast factor uniform in [1 - c, 1 + c]
    erase_p: float = 0.25        # probability of random erasing
    erase_area: tuple[float, float] = (0.02, 0.15)   # fraction of the image
    erase_ratio: tuple[float, float] = (0.3, 3.3)    # aspect (h / w), log-uniform

    @property
    def geometric(self) -> bool:
        return self.flip > 0 or self.rotate_deg > 0 or self.scale > 0 or self.translate > 0


class BatchAugment:
    """Augment ``(B, C, H, W)`` batches on their device; see the module doc."""

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def sample(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Random parameters of ``n`` images, drawn on ``generator``'s device (always the same
        number of draws whatever the config, so the stream does not depend on which ops are on)."""
        c = self.cfg
        dev = generator.device
        u = torch.rand(10, n, generator=generator, device=dev)
        lo, hi = math.log(c.erase_ratio[0]), math.log(c.erase_ratio[1])
        return {
            "flip": u[0] < c.flip,
            "angle": (u[1] * 2 - 1) * math.radians(c.rotate_deg),
            "scale": 1 + (u[2] * 2 - 1) * c.scale,
            "tx": (u[3] * 2 - 1) * c.translate * 2,   # grid units: the image spans [-1, 1]
            "ty": (u[4] * 2 - 1) * c.translate * 2,
            "brightness": (u[5] * 2 - 1) * c.brightness,
            "contrast": 1 + (u[6] * 2 - 1) * c.contrast,
            "erase": u[7] < c.erase_p,
            "erase_area": c.erase_area[0] + u[8] * (c.erase_area[1] - c.erase_area[0]),
            "erase_ratio": torch.exp(lo + u[9] * (hi - lo)),
            # position and fill of the erased box reuse independent bits of the draws above
            "erase_pos": torch.rand(3, n, generator=generator, device=dev),
        }

    @staticmethod
    def slice(params: dict[str, Tensor], sl: slice) -> dict[str, Tensor]:
        return {k: (v[..., sl] if k == "erase_pos" else v[sl]) for k, v in params.items()}

    def apply(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Augment ``x`` (B, C, H, W) float in [0, 1] with parameters ``p`` of B images."""
        c = self.cfg
        b, _, h, w = x.shape
        if c.geometric:
            cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
            s = 1.0 / p["scale"]                       # output -> input coordinates
            f = torch.where(p["flip"], -1.0, 1.0).to(x.dtype)
            theta = torch.stack([
                torch.stack([s * cos * f, -s * sin, p["tx"]], dim=1),
                torch.stack([s * sin * f, s * cos, p["ty"]], dim=1),
            ], dim=1).to(x.dtype)                      # (B, 2, 3)
            grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if c.brightness > 0 or c.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * p["contrast"].view(b, 1, 1, 1).to(x.dtype) + mean \
                + p["brightness"].view(b, 1, 1, 1).to(x.dtype)
            x = x.clamp(0.0, 1.0)
        if c.erase_p > 0:
            area = p["erase_area"] * (h * w)
            eh = torch.sqrt(area * p["erase_ratio"]).clamp(1, h)
            ew = torch.sqrt(area / p["erase_ratio"]).clamp(1, w)
            y0 = p["erase_pos"][0] * (h - eh)
            x0 = p["erase_pos"][1] * (w - ew)
            ys = torch.arange(h, device=x.device, dtype=eh.dtype).view(1, h, 1)
            xs = torch.arange(w, device=x.device, dtype=eh.dtype).view(1, 1, w)
            box = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1))
                   & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1))
                   & p["erase"].view(b, 1, 1))
            x = torch.where(box.unsqueeze(1), p["erase_pos"][2].view(b, 1, 1, 1).to(x.dtype), x)
        return x

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x.shape[0], generator))


def to_float(images_u8: Tensor) -> Tensor:
    """(B, H, W) or (B, 1, H, W) uint8 -> (B, 1, H, W) float in [0, 1] (no normalisation)."""
    if images_u8.ndim == 3:
        images_u8 = images_u8.unsqueeze(1)
    return images_u8.float().div_(255.0)


def normalize(x: Tensor, mean: float = 0.5, std: float = 0.25) -> Tensor:
    """[0, 1] -> roughly zero-mean, unit-variance input of the network."""
    return (x - mean) / std
