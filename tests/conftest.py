"""Shared fixtures. ``../shared`` (beside the checkout) holds real data; tests that need it skip,
saying so, where it is absent. Features never depend on it."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def column_graph(tmp_path_factory):
    """The bundled real MICrONS V1 column, built once (a few seconds) into a temporary cache."""
    from connectomics.build import build_graph
    from connectomics.sources.column import ColumnSource

    root = tmp_path_factory.mktemp("column_cache")
    return build_graph(ColumnSource(), root, progress=False)
