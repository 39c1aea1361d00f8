"""Shared fixtures (plain helpers: ``tests/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.helpers import make_train_env


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


@pytest.fixture(scope="module")
def train_env(tmp_path_factory):
    """``(root, data csv, graph folder)`` of seconds-long trainings, one per test module
    (:func:`tests.helpers.make_train_env`; :func:`tests.helpers.tiny_cfg` takes it)."""
    return make_train_env(tmp_path_factory.mktemp("trainenv"))
