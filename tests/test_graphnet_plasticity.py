"""Hebbian (Oja) plasticity with homeostatic thresholds."""

from __future__ import annotations

import pytest
import torch

from graphnet import ColumnSpec, HebbianRule, MaskedLinear, SparseLinear, compile_column
from graphnet.plasticity import HebbianRecord, ThresholdRecord, oja_delta
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def test_oja_delta_matches_formula_and_is_masked():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 7, generator=g) < 0.5
    m = MaskedLinear(7, 5, mask, generator=g)
    x, y = torch.randn(9, 7, generator=g), torch.rand(9, 5, generator=g)
    d = oja_delta(m, x, y, rate=0.1)
    w = m.effective_weight().detach()
    expect = 0.1 * (y.t() @ x / 9 - (y ** 2).mean(0)[:, None] * w) * mask
    torch.testing.assert_close(d, expect)
    assert torch.all(d[~mask] == 0)
    s = SparseLinear.from_masked(m)
    rows, cols = mask.nonzero(as_tuple=True)
    torch.testing.assert_close(oja_delta(s, x, y, rate=0.1), expect[rows, cols])


def test_oja_rule_finds_the_principal_component():
    # a single linear unit under Oja's rule converges to the unit-norm top eigenvector
    torch.manual_seed(0)
    C = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    L = torch.linalg.cholesky(C)
    m = MaskedLinear(3, 1, torch.ones(1, 3, dtype=torch.bool), bias=False)
    rule = HebbianRule(rate=0.01, homeostasis=False)
    for _ in range(1500):
        x = torch.randn(32, 3) @ L.t()
        rule.step([HebbianRecord("u", m, x, m(x).detach())])
    w = m.effective_weight().detach()[0]
    top = torch.linalg.eigh(C).eigenvectors[:, -1]
    assert w.norm().item() == pytest.approx(1.0, abs=0.05)
    assert abs(torch.dot(w / w.norm(), top).item()) > 0.99


def _column(**kw):
    g = synthetic_graph(seed=1)
    spec = ColumnSpec.bionic(noise_std=0.0, **kw)
    return compile_column(g, spec, in_features=12)


def _masks_and_weights(col):
    out = {}
    for key, pp in col.projection_plans.items():
        mod = col.projection(pp.src, pp.dst)
        out[key] = (mod.mask.clone(), mod.effective_weight().detach().clone(), mod.weight.detach().clone())
    return out


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_plasticity_step_changes_only_masked_weights_and_keeps_dale(backend):
    col = _column(hebbian_rate=0.05, backend=backend).train()
    before = _masks_and_weights(col)
    col(torch.randn(32, 12))
    stats = col.plasticity_step()
    assert any(k.startswith("hebbian/") for k in stats)
    after = _masks_and_weights(col)
    changed = 0
    for key, (mask, w0, raw0) in before.items():
        m1, w1, raw1 = after[key]
        assert torch.equal(mask, m1)
        if isinstance(col.projection(*key.split("->")), MaskedLinear):
            assert torch.all(raw1[~mask] == 0)
        assert torch.all(w1 >= 0)  # all compiled cells are excitatory: Dale keeps w >= 0
        changed += int((w1 != w0).sum())
    assert changed > 0
    # the records are consumed: a second step without a forward is an error
    with pytest.raises(RuntimeError, match="no activity recorded"):
        col.plasticity_step()


def test_plasticity_step_is_a_noop_when_both_switches_are_off():
    col = _column(hebbian_rate=0.0, homeostasis=False).train()
    sd = {k: v.clone() for k, v in col.state_dict().items()}
    col(torch.randn(8, 12))
    assert col.plasticity_step() == {}
    for k, v in col.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_homeostasis_pulls_mean_activity_to_target():
    col = _column(hebbian_rate=0.0, homeostasis=True, homeostatic_target=0.05,
                  homeostatic_rate=0.2, graded_inhibition=False).train()
    x = torch.randn(256, 12)
    first = col(x).mean().item()
    for _ in range(150):
        col(x)
        col.plasticity_step()
    with torch.no_grad():
        acts = col(x, return_all=True)
    assert first > 0.2
    for name, a in acts.items():
        assert a.mean().item() == pytest.approx(0.05, abs=0.03), name
    assert all(float(l.threshold.mean()) > 0 for l in col.layers.values())
    # homeostasis off: thresholds never move
    col2 = _column(hebbian_rate=0.01, homeostasis=False).train()
    col2(x)
    col2.plasticity_step()
    assert all(torch.all(l.threshold == 0) for l in col2.layers.values())


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_homeostasis_acts_without_hebbian(backend):
    # each switch acts alone: rate exactly 0 with homeostasis on moves thresholds, not weights
    col = _column(hebbian_rate=0.0, homeostasis=True, homeostatic_rate=0.1,
                  backend=backend).train()
    weights = {k: w for k, (_, w, _) in _masks_and_weights(col).items()}
    col(torch.randn(32, 12))
    stats = col.plasticity_step()
    assert any(k.startswith("homeostasis/") for k in stats)
    assert not any(k.startswith("hebbian/") for k in stats)
    for name, layer in col.layers.items():
        assert torch.any(layer.threshold != 0), name
    for key, (_, w, _) in _masks_and_weights(col).items():
        assert torch.equal(w, weights[key]), key


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_hebbian_acts_without_homeostasis(backend):
    col = _column(hebbian_rate=0.05, homeostasis=False, backend=backend).train()
    weights = {k: w for k, (_, w, _) in _masks_and_weights(col).items()}
    col(torch.randn(32, 12))
    stats = col.plasticity_step()
    assert any(k.startswith("hebbian/") for k in stats)
    assert not any(k.startswith("homeostasis/") for k in stats)
    assert all(torch.all(l.threshold == 0) for l in col.layers.values())
    assert any(not torch.equal(w, weights[k]) for k, (_, w, _) in _masks_and_weights(col).items())


def test_rule_with_rate_zero_still_moves_thresholds():
    rule = HebbianRule(rate=0.0, homeostasis=True, target=0.1, homeostatic_rate=0.5)
    m = MaskedLinear(3, 2, torch.ones(2, 3, dtype=torch.bool))
    w = m.weight.detach().clone()
    thr = torch.zeros(2)
    rule.step([HebbianRecord("m", m, torch.ones(4, 3), torch.ones(4, 2))],
              [ThresholdRecord("L", thr, torch.ones(4, 2))])
    torch.testing.assert_close(thr, torch.full((2,), 0.5 * (1.0 - 0.1)))
    assert torch.equal(m.weight, w)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_non_finite_update_raises_and_leaves_weights_untouched(backend):
    col = _column(hebbian_rate=0.01, backend=backend).train()
    col(torch.randn(8, 12))
    sd = {k: v.clone() for k, v in col.state_dict().items()}
    col.layers["C"].last_post[0, 0] = float("nan")  # a NaN in the recorded activity
    with pytest.raises(FloatingPointError, match="non-finite"):
        col.plasticity_step()
    for k, v in col.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # an inf from a huge rate: overflow is caught too
    rule = HebbianRule(rate=float("inf"))
    m = MaskedLinear(3, 2, torch.ones(2, 3, dtype=torch.bool))
    w = m.weight.detach().clone()
    with pytest.raises(FloatingPointError):
        rule.step([HebbianRecord("m", m, torch.ones(4, 3), torch.ones(4, 2))])
    assert torch.equal(m.weight, w)


def test_threshold_record_update_is_checked():
    rule = HebbianRule(rate=0.1, homeostasis=True, homeostatic_rate=float("nan"))
    thr = torch.zeros(3)
    with pytest.raises(FloatingPointError, match="threshold"):
        rule.step([], [ThresholdRecord("L", thr, torch.ones(2, 3))])
    assert torch.all(thr == 0)
