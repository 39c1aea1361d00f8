"""Automatic dense/sparse choice from the measured crossover table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graphnet import CROSSOVER, choose_backend, crossover_density
from graphnet import backend as bk
from graphnet.testing import torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def test_overrides_win():
    assert choose_backend(10, 10, 0.9, backend="sparse") == "sparse"
    assert choose_backend(10**6, 10**6, 1e-6, backend="dense") == "dense"
    with pytest.raises(ValueError):
        choose_backend(10, 10, 0.1, backend="gpu")


def test_choice_follows_the_measured_table():
    for n, d in CROSSOVER["cpu"]:
        assert crossover_density(n, n, "cpu") == pytest.approx(d)
        if d > 0:
            assert choose_backend(n, n, d * 0.5, "cpu") == "sparse"
        if d < 1:
            assert choose_backend(n, n, min(1.0, d * 2 + 1e-3), "cpu") == "dense"


def test_interpolation_is_between_neighbours():
    (n0, d0), (n1, d1) = CROSSOVER["cpu"][0], CROSSOVER["cpu"][1]
    mid = int((n0 * n1) ** 0.5)
    c = crossover_density(mid, mid, "cpu")
    assert min(d0, d1) - 1e-12 <= c <= max(d0, d1) + 1e-12
    assert crossover_density(1, 1, "cpu") == pytest.approx(d0)  # clamped below the table


def test_dense_that_does_not_fit_is_sparse(monkeypatch):
    monkeypatch.setattr(bk, "device_memory_bytes", lambda device="cpu": 8 * 1024**3)
    assert choose_backend(100_000, 100_000, 0.5, "cpu") == "sparse"  # 2e11 bytes dense


@pytest.mark.slow
def test_benchmark_quick_runs(tmp_path):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "compiler.md"
    r = subprocess.run([sys.executable, str(root / "bench" / "compiler.py"), "--quick",
                        "--sizes", "300", "1000", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert out.exists(), r.stderr
    text = out.read_text()
    assert "| 1,000 |" in text and "bionic-sized column" in text
