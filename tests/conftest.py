"""Shared fixtures. ``../shared`` (beside the checkout) holds real data; tests that need it skip,
saying so, where it is absent. Features never depend on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (real data lives in ../shared beside the checkout)")
    return p


@pytest.fixture(scope="session")
def surrogate_column():
    from connectomics.sources.surrogate import generate_column

    return generate_column(seed=0)


@pytest.fixture(scope="session")
def surrogate_graph(tmp_path_factory):
    from connectomics.build import build_graph
    from connectomics.sources.surrogate import SurrogateSource

    root = tmp_path_factory.mktemp("cache")
    return build_graph(SurrogateSource(seed=0), root, progress=False)


# -- figure helpers (tests of connectomics.plot, graphnet.plots, pipelines.plots) -------------------
def images(fig) -> list:
    """Every ``AxesImage`` of a matplotlib figure, axes in order."""
    return [im for ax in fig.axes for im in ax.get_images()]


def image_data(im) -> np.ndarray:
    """An image's data as floats, masked entries NaN."""
    return np.ma.filled(np.ma.asarray(im.get_array(), dtype=float), np.nan)


def lines_with_gid(ax, gid: str) -> list:
    """The lines of ``ax`` tagged with ``gid``."""
    return [l for l in ax.get_lines() if l.get_gid() == gid]
