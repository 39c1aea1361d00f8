"""MaskedLinear: masked fan-in init, masks through optimisers and checkpoints, Dale's law."""

from __future__ import annotations

import io

import pytest
import torch

from graphnet import MaskedLinear
from graphnet.testing import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def _mask(out, inp, p, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(out, inp, generator=g) < p
    m[:, 0] = True  # every unit has an input
    return m


@pytest.mark.parametrize("density", [0.02, 0.3, 1.0])
def test_init_is_scaled_by_masked_fan_in(density):
    torch.manual_seed(0)
    m = MaskedLinear(2000, 200, _mask(200, 2000, density), bias=False,
                     generator=torch.Generator().manual_seed(1))
    w = m.effective_weight()
    # per-row sum of squares = gain^2 = 1 whatever the density (dense fan-in would give ~density)
    row_ss = (w ** 2).sum(1)
    assert row_ss.mean().item() == pytest.approx(1.0, rel=0.1)
    # so outputs of unit-variance inputs have unit variance
    y = m(torch.randn(4000, 2000))
    assert y.std().item() == pytest.approx(1.0, rel=0.1)


def test_masked_entries_zero_at_init_and_zero_grad():
    mask = _mask(30, 40, 0.2)
    m = MaskedLinear(40, 30, mask)
    assert torch.all(m.weight[~mask] == 0)
    assert m.fan_in.tolist() == mask.sum(1).tolist()
    m(torch.randn(8, 40)).pow(2).sum().backward()
    assert torch.all(m.weight.grad[~mask] == 0)
    assert m.weight.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("dale", [False, True])
def test_masked_entries_stay_exactly_zero_through_adamw(dale):
    mask = _mask(20, 25, 0.3)
    sign = torch.where(torch.arange(25) % 4 == 0, -1.0, 1.0) if dale else None
    m = MaskedLinear(25, 20, mask, sign=sign)
    opt = torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.1)
    x, t = torch.randn(64, 25), torch.randn(64, 20)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = (m(x) - t).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # it learns
    assert torch.all(m.weight[~mask] == 0)
    assert torch.all(m.effective_weight()[~mask] == 0)


def test_dale_signs_hold_whatever_the_optimiser_does():
    mask = torch.ones(10, 6, dtype=torch.bool)
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, 0.0])
    m = MaskedLinear(6, 10, mask, sign=sign)
    w0 = m.effective_weight().detach()
    assert torch.all(w0[:, :3] >= 0) and torch.all(w0[:, 3:5] <= 0)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    x = torch.rand(32, 6)
    for _ in range(20):  # push every weight the wrong way (E down, I up)
        opt.zero_grad()
        (m.effective_weight() * sign * 10).sum().backward()
        opt.step()
    w = m.effective_weight().detach()
    assert torch.all(w[:, :3] >= 0) and torch.all(w[:, 3:5] <= 0)
    assert m(x).shape == (32, 10)
    # the free column (sign 0) did cross zero: it is unconstrained
    m2 = MaskedLinear(6, 10, mask, sign=sign)
    with torch.no_grad():
        m2.set_effective_weight_(-torch.ones(10, 6))
    w2 = m2.effective_weight()
    assert torch.all(w2[:, :3] == 0) and torch.all(w2[:, 3:] == -1)


def test_state_dict_round_trip_keeps_mask_and_rezeroes():
    mask = _mask(12, 9, 0.4)
    m = MaskedLinear(9, 12, mask, sign=torch.ones(9))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    assert torch.equal(sd["mask"], mask)
    sd["weight"] = torch.randn(12, 9)  # a tampered checkpoint with non-zero masked entries
    m2 = MaskedLinear(9, 12, torch.ones(12, 9, dtype=torch.bool), sign=torch.ones(9))
    m2.load_state_dict(sd)
    assert torch.equal(m2.mask, mask)
    assert torch.all(m2.weight[~mask] == 0)
    m.load_state_dict(m.state_dict())
    x = torch.randn(3, 9)
    m3 = MaskedLinear(9, 12, mask, sign=torch.ones(9))
    m3.load_state_dict(m.state_dict())
    assert torch.equal(m3(x), m(x))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="mask shape"):
        MaskedLinear(4, 3, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="sign"):
        MaskedLinear(4, 3, torch.ones(3, 4, dtype=torch.bool), sign=torch.ones(3))
    with pytest.raises(ValueError, match="sign entries"):
        MaskedLinear(4, 3, torch.ones(3, 4, dtype=torch.bool), sign=torch.full((4,), 2.0))


def test_scale_makes_magnitudes_proportional_and_keeps_row_variance():
    mask = torch.ones(200, 50, dtype=torch.bool)
    scale = torch.ones(200, 50)
    scale[:, 25:] = 4.0
    m = MaskedLinear(50, 200, mask, scale=scale, generator=torch.Generator().manual_seed(0))
    w = m.effective_weight().detach()
    ratio = w[:, 25:].abs().mean() / w[:, :25].abs().mean()
    assert ratio.item() == pytest.approx(4.0, rel=0.1)
    assert (w ** 2).sum(1).mean().item() == pytest.approx(1.0, rel=0.1)
