r"""Hebbian plasticity with homeostatic regulation, applied within the connectome masks.

:meth:`graphnet.CorticalColumn.plasticity_step` runs :meth:`HebbianRule.step` after each
optimiser step, on the activity each layer recorded in its last training forward (pre-synaptic
input :math:`\mathbf{x}` of each masked projection and the layer's output :math:`\mathbf{y}`,
batch of :math:`B`):

**Oja's rule** (Hebbian growth with a decay that bounds each unit's weight norm), restricted to
the connections :math:`M` of the projection:

.. math::
    \Delta W_{ij} = \eta \, M_{ij} \Big( \langle y_i x_j \rangle - \langle y_i^2 \rangle W_{ij} \Big),
    \qquad \langle \cdot \rangle = \tfrac1B \textstyle\sum_b

on the *effective* weights (Dale signs included); the result is projected back onto Dale's
constraint (E outgoing weights >= 0, I <= 0) and masked entries stay exactly zero.
Within-layer projections use :math:`\mathbf{x} = \mathrm{ReLU}(\mathbf{z})`, the input of the
recurrent step. The dense input projection (features, not cells) is not plastic.

**Homeostasis** (intrinsic plasticity): each unit has a threshold :math:`\theta_i`,
:math:`h_i = g_i \, \mathrm{ReLU}(u_i - \theta_i)`, moved so its mean activity approaches the
target :math:`\rho`:

.. math::
    \theta_i \leftarrow \theta_i + \eta_h \big( \langle y_i \rangle - \rho \big)

(a unit more active than :math:`\rho` raises its threshold, a silent one lowers it, which
revives dead ReLUs). The step is all-or-nothing: every update is computed first and, if any is
NaN/inf, :class:`FloatingPointError` is raised and no weight or threshold is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch
from torch import Tensor


class PlasticLayer(Protocol):
    """What :class:`~graphnet.MaskedLinear` and :class:`~graphnet.SparseLinear` provide."""

    def effective_weight(self) -> Tensor: ...
    def outer_mean(self, y: Tensor, x: Tensor) -> Tensor: ...
    def expand_post(self, v: Tensor) -> Tensor: ...
    def set_effective_weight_(self, w: Tensor) -> None: ...


@dataclass
class HebbianRecord:
    """Activity of one plastic projection in the last training batch."""

    name: str
    layer: PlasticLayer
    pre: Tensor   # (B, in)
    post: Tensor  # (B, out)


@dataclass
class ThresholdRecord:
    """A layer's homeostatic threshold buffer and its last batch of output activity."""

    name: str
    threshold: Tensor  # (n,) buffer, updated in place
    post: Tensor       # (B, n)


@torch.no_grad()
def oja_delta(layer: PlasticLayer, pre: Tensor, post: Tensor, rate: float) -> Tensor:
    r""":math:`\eta(\langle y x^\top\rangle - \langle y^2\rangle \odot W)` at the layer's
    connections, shaped like its weight storage (``(out, in)`` dense, ``(E,)`` sparse)."""
    w = layer.effective_weight().detach()
    pre, post = pre.to(w.dtype), post.to(w.dtype)
    return rate * (layer.outer_mean(post, pre) - layer.expand_post((post * post).mean(0)) * w)


@torch.no_grad()
def threshold_delta(post: Tensor, target: float, rate: float) -> Tensor:
    r""":math:`\eta_h(\langle y\rangle - \rho)` per unit, ``(B, n) -> (n,)``."""
    return rate * (post.mean(0) - target)


def _check_finite(kind: str, name: str, t: Tensor) -> None:
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise FloatingPointError(
            f"non-finite {kind} in {name!r} ({int(bad.sum())} of {t.numel()} entries NaN/inf); "
            "no weights or thresholds were changed"
        )


@dataclass(frozen=True)
class HebbianRule:
    """Oja's rule with homeostatic thresholds (see the module docstring)."""

    rate: float
    homeostasis: bool = True
    target: float = 0.1
    homeostatic_rate: float = 0.01

    @property
    def active(self) -> bool:
        """Whether :meth:`step` changes anything (Hebbian rate > 0 or homeostasis on)."""
        return self.rate > 0 or self.homeostasis

    @torch.no_grad()
    def step(self, hebbian: Iterable[HebbianRecord],
             thresholds: Iterable[ThresholdRecord] = ()) -> dict[str, float]:
        """Compute every update, check them all, then apply them. Returns summary stats.

        The two parts are independent: Hebbian updates run when ``rate > 0``, threshold updates
        when ``homeostasis`` is on; with both off this is a no-op returning ``{}``."""
        new_weights: list[tuple[PlasticLayer, Tensor]] = []
        stats: dict[str, float] = {}
        for rec in (hebbian if self.rate > 0 else ()):
            d = oja_delta(rec.layer, rec.pre, rec.post, self.rate)
            _check_finite("Hebbian update", rec.name, d)
            new = rec.layer.effective_weight().detach() + d
            _check_finite("weight after the Hebbian update", rec.name, new)
            new_weights.append((rec.layer, new))
            stats[f"hebbian/{rec.name}/mean_abs_dw"] = float(d.abs().mean()) if d.numel() else 0.0
        new_thresholds: list[tuple[Tensor, Tensor]] = []
        if self.homeostasis:
            for rec in thresholds:
                d = threshold_delta(rec.post.to(rec.threshold.dtype), self.target,
                                    self.homeostatic_rate)
                _check_finite("homeostatic threshold update", rec.name, d)
                new_thresholds.append((rec.threshold, rec.threshold + d))
                stats[f"homeostasis/{rec.name}/mean_activity"] = float(rec.post.mean())
        for layer, new in new_weights:
            layer.set_effective_weight_(new)
        for buf, new in new_thresholds:
            buf.copy_(new)
        return stats
