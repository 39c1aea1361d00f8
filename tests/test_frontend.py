"""The conv front end's lateral inhibition: the reference formula, the fast convolution and its
hand-written backward."""

from __future__ import annotations

import pytest
import torch

from graphnet.testing import torch_threads
from pipelines.frontend import (DivisiveNormFunction, FastLateralInhibition2d, LateralInhibition2d,
                                lateral_window_kernel)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lateral_inhibition_equals_lrn_without_spatial_extent(size):
    x = torch.rand(2, 8, 5, 6)
    li = LateralInhibition2d(size=size, spatial=1, alpha=0.7, beta=0.75, k=1.5)
    lrn = torch.nn.LocalResponseNorm(size, alpha=0.7, beta=0.75, k=1.5)
    torch.testing.assert_close(li(x), lrn(x))


def test_lateral_inhibition_suppresses_by_active_neighbours():
    li = LateralInhibition2d(size=3, spatial=3, alpha=1.0, beta=1.0, k=1.0)
    x = torch.zeros(1, 5, 7, 7)
    x[0, 2, 3, 3] = 1.0
    alone = li(x)[0, 2, 3, 3].item()
    # divisor = 1 + 1 * (1 / 27): an isolated unit is barely changed
    assert alone == pytest.approx(1.0 / (1.0 + 1.0 / 27))
    x[0, 1, 3, 4] = 3.0   # a strongly active neighbour (adjacent channel and position)
    assert li(x)[0, 2, 3, 3].item() < 0.8 * alone
    x2 = torch.zeros(1, 5, 7, 7)
    x2[0, 2, 3, 3], x2[0, 2, 0, 0] = 1.0, 3.0   # far away (outside the 3x3 window): no effect
    assert li(x2)[0, 2, 3, 3].item() == pytest.approx(alone)
    assert li(x).shape == x.shape


def test_lateral_inhibition_validates():
    with pytest.raises(ValueError):
        LateralInhibition2d(size=4)
    with pytest.raises(ValueError):
        LateralInhibition2d()(torch.zeros(3, 4, 5))


def test_fast_lateral_inhibition_equals_the_reference_and_its_gradients():
    for c, size, spatial, beta in [(8, 5, 3, 0.75), (8, 3, 1, 0.5), (5, 1, 5, 0.75)]:
        ref = LateralInhibition2d(size=size, spatial=spatial, beta=beta, alpha=2.0, k=1.5)
        fast = FastLateralInhibition2d(c, size=size, spatial=spatial, beta=beta, alpha=2.0, k=1.5)
        assert isinstance(fast, LateralInhibition2d) and fast.state_dict() == {} == ref.state_dict()
        x = torch.randn(2, c, 8, 8, requires_grad=True)
        a, b = ref(x), fast(x)
        ga, = torch.autograd.grad(a.square().sum(), x)
        gb, = torch.autograd.grad(b.square().sum(), x)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-5)
        # another channel count takes the reference path
        y = torch.randn(2, c + 1, 5, 5)
        torch.testing.assert_close(fast(y), ref(y))
    # the hand-written backward, with a non-symmetric kernel to exercise the transpose
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 3, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: DivisiveNormFunction.apply(t, w, 1.0, 2.0, 1), (x,))
    assert lateral_window_kernel(8, 5, 3)[0, :, 1, 1].tolist()[:4] == pytest.approx([1 / 45] * 3 + [0])


def test_fast_lateral_inhibition_equals_a_direct_loop():
    # the formula written out with loops (independent of avg_pool3d and conv2d)
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    n, s, alpha, beta, k = 3, 3, 2.0, 0.75, 1.5
    expect = torch.empty_like(x)
    for c in range(4):
        for u in range(5):
            for v in range(5):
                tot = 0.0
                for c2 in range(c - n // 2, c + n // 2 + 1):
                    for u2 in range(u - s // 2, u + s // 2 + 1):
                        for v2 in range(v - s // 2, v + s // 2 + 1):
                            if 0 <= c2 < 4 and 0 <= u2 < 5 and 0 <= v2 < 5:
                                tot += float(x[0, c2, u2, v2]) ** 2
                expect[0, c, u, v] = x[0, c, u, v] / (k + alpha * tot / (n * s * s)) ** beta
    fast = FastLateralInhibition2d(4, size=n, spatial=s, alpha=alpha, beta=beta, k=k)
    torch.testing.assert_close(fast(x).double(), expect, atol=1e-5, rtol=1e-5)
