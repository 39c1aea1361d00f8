"""SparseLinear == MaskedLinear given the same weights: outputs and gradients (tol 1e-5, float32)."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import MaskedLinear, SparseLinear
from graphnet.testing import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


TOL = dict(rtol=1e-5, atol=1e-5)


@st.composite
def layers(draw):
    n_in = draw(st.integers(1, 48))
    n_out = draw(st.integers(1, 48))
    density = draw(st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5, 1.0]))
    batch = draw(st.integers(1, 17))
    dale = draw(st.booleans())
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return n_in, n_out, density, batch, dale, bias, seed


def _compare(n_in, n_out, density, batch, dale, bias, seed, impl, device):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_out, n_in, generator=g) < density
    sign = torch.where(torch.rand(n_in, generator=g) < 0.3, -1.0, 1.0) if dale else None
    dense = MaskedLinear(n_in, n_out, mask, bias=bias, sign=sign, generator=g).to(device)
    if bias:
        with torch.no_grad():
            dense.bias.normal_(generator=None)
    sparse = SparseLinear.from_masked(dense, impl=impl).to(device)
    x = torch.randn(batch, n_in, generator=g).to(device).requires_grad_(True)
    gy = torch.randn(batch, n_out, generator=g).to(device)

    y_d = dense(x)
    y_s = sparse(x)
    torch.testing.assert_close(y_s, y_d, **TOL)
    params_d = [x, dense.weight] + ([dense.bias] if bias else [])
    params_s = [x, sparse.weight] + ([sparse.bias] if bias else [])
    gd = torch.autograd.grad(y_d, params_d, gy, allow_unused=True)
    gs = torch.autograd.grad(y_s, params_s, gy, allow_unused=True)
    torch.testing.assert_close(gs[0], gd[0], **TOL)                       # input
    rows, cols = mask.to(device).nonzero(as_tuple=True)
    gw_s = gs[1] if gs[1] is not None else torch.zeros(0, device=device)
    torch.testing.assert_close(gw_s, gd[1][rows, cols], **TOL)             # per-edge weights
    assert torch.all(gd[1][~mask.to(device)] == 0)
    if bias:
        torch.testing.assert_close(gs[2], gd[2], **TOL)


@settings(max_examples=60, deadline=None)
@given(layers(), st.sampled_from(["csr", "scatter"]))
def test_sparse_equals_masked_cpu(params, impl):
    _compare(*params, impl=impl, device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none available)")
@settings(max_examples=30, deadline=None)
@given(layers(), st.sampled_from(["csr", "scatter"]))
def test_sparse_equals_masked_cuda(params, impl):
    _compare(*params, impl=impl, device="cuda")


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 9, generator=g) < 0.4
    m = MaskedLinear(9, 6, mask, sign=torch.tensor([1., -1, 0, 1, 1, -1, 0, 1, 1]),
                     dtype=torch.float64, generator=g)
    s = SparseLinear.from_masked(m)
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)

    def f(x, w):
        with torch.no_grad():
            s.weight.copy_(w)
        return s.forward(x)

    assert torch.autograd.gradcheck(lambda x: s(x), (x,))
    w = s.weight.detach().clone().requires_grad_(True)
    from graphnet.sparse_linear import _CSRLinearFunction
    fn = lambda x, w: _CSRLinearFunction.apply(x, w, s.crow, s.col, s.perm_t, s.crow_t,  # noqa: E731
                                               s.col_t, 6)
    assert torch.autograd.gradcheck(fn, (x, w))


def test_same_seed_same_init_as_masked_and_round_trips():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(7, 11, generator=g) < 0.5
    rows, cols = mask.nonzero(as_tuple=True)
    perm = torch.randperm(rows.numel(), generator=g)  # edge order must not matter
    d = MaskedLinear(11, 7, mask, generator=torch.Generator().manual_seed(5))
    s = SparseLinear(11, 7, torch.stack([cols, rows])[:, perm], generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(s.dense_weight().detach(), d.effective_weight().detach())
    assert torch.equal(s.mask, mask)
    assert torch.equal(s.fan_in, d.fan_in)
    assert torch.equal(s.connections(), d.connections())
    torch.testing.assert_close(s.edge_values(), d.edge_values())
    back = s.to_masked()
    x = torch.randn(3, 11)
    torch.testing.assert_close(back(x), s(x), **TOL)


def test_state_dict_round_trip():
    ei = torch.tensor([[0, 2, 1, 3], [1, 0, 2, 2]])
    s = SparseLinear(4, 3, ei, sign=torch.tensor([1., 1., -1., 1.]))
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    s2 = SparseLinear(4, 3, ei)
    s2.register_buffer("sign", torch.zeros(4))
    s2.load_state_dict(torch.load(buf))
    x = torch.randn(5, 4)
    torch.testing.assert_close(s2(x), s(x))
    assert torch.all(s2.effective_weight()[s2.edge_index[0] == 2] <= 0)


def test_invalid_edges_raise():
    with pytest.raises(ValueError, match="duplicate"):
        SparseLinear(3, 3, torch.tensor([[0, 0], [1, 1]]))
    with pytest.raises(ValueError, match="outside"):
        SparseLinear(3, 3, torch.tensor([[0], [3]]))
    with pytest.raises(ValueError, match="impl"):
        SparseLinear(3, 3, torch.tensor([[0], [1]]), impl="cusparse")


def test_sparse_keeps_dale_through_adamw():
    ei = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1]])
    s = SparseLinear(3, 2, ei, sign=torch.tensor([1.0, -1.0, 1.0]))
    opt = torch.optim.AdamW(s.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.rand(16, 3)
    for _ in range(30):
        opt.zero_grad()
        (-s(x)[:, 0].sum() + s(x)[:, 1].sum()).backward()
        opt.step()
    w = s.effective_weight()
    assert torch.all(w[s.edge_index[0] == 1] <= 0)
    assert torch.all(w[s.edge_index[0] != 1] >= 0)


def test_sign_and_scale_checks_and_dale_projection_are_shared_with_masked():
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    rows, cols = mask.nonzero(as_tuple=True)
    ei = torch.stack([cols, rows])
    for bad, match in ((torch.ones(2), r"sign shape \(2,\) != \(3,\)"),
                       (torch.tensor([1.0, 2.0, 0.0]), "sign entries must be")):
        with pytest.raises(ValueError, match=match):
            MaskedLinear(3, 2, mask, sign=bad)
        with pytest.raises(ValueError, match=match):
            SparseLinear(3, 2, ei, sign=bad)
    with pytest.raises(ValueError, match=r"scale shape \(3,\) != edges \(4,\)"):
        SparseLinear(3, 2, ei, scale=torch.ones(3))
    with pytest.raises(ValueError, match=r"scale shape \(2, 2\) != mask shape \(2, 3\)"):
        MaskedLinear(3, 2, mask, scale=torch.ones(2, 2))
    sign = torch.tensor([1.0, -1.0, 0.0])
    d = MaskedLinear(3, 2, mask, sign=sign)
    s = SparseLinear.from_masked(d)
    target = torch.tensor([[-0.5, 0.7, 0.3], [0.4, 0.2, -0.9]])
    d.set_effective_weight_(target)
    s.set_effective_weight_(target[rows, cols])
    # E unit 0 clamped to >= 0, I unit 1 to <= 0, free unit 2 kept; off-mask entries zero
    expect = torch.tensor([[0.0, 0.0, 0.3], [0.4, 0.0, 0.0]])
    torch.testing.assert_close(d.effective_weight().detach(), expect)
    torch.testing.assert_close(s.dense_weight().detach(), expect)
    assert "dale=True" in repr(d) and "dale=True" in repr(s) and "impl='csr'" in repr(s)
