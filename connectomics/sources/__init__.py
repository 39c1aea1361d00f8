"""Where the tables come from: every source by name (:data:`SOURCES`), and :func:`make_source`.

Each source puts CAVE tables in the canonical schemas (:class:`~connectomics.sources.base.Source`):

``column``      the real MICrONS V1 column bundled with the package (:mod:`.column`), the default
``surrogate``   a V1 column generated from the real one's statistics (:mod:`.surrogate`)
``cave``        a live pull from a CAVE materialization server (:mod:`.cave`)
``snapshot``    a folder of static table dumps (:mod:`.snapshot`)
``volume``      the whole-volume surrogate over a typed soma table (:mod:`.volume`)

A registry entry takes the options of :func:`make_source` as keywords, uses those it needs and
ignores the rest; its module is imported only when the source is made (``cave`` brings
caveclient).
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Source, SourceError

__all__ = ["SOURCES", "Source", "SourceError", "make_source"]


def _column(**_: Any) -> Source:
    from .column import ColumnSource

    return ColumnSource()


def _surrogate(*, seed: int, **_: Any) -> Source:
    from .surrogate import SurrogateSource

    return SurrogateSource(seed=seed)


def _cave(*, datastack: str, version: int, auth_token: str | None, token_file: str | None,
          query: Any = None, batch_size: int | None = None, **_: Any) -> Source:
    kw = {"batch_size": batch_size} if batch_size else {}
    if query is not None:   # a population query (connectomics.sources.population) names its datastack
        from .population import PopulationSource

        return PopulationSource(query, auth_token=auth_token, auth_token_file=token_file, **kw)
    from .cave import CaveSource

    return CaveSource(datastack=datastack, version=version, auth_token=auth_token, auth_token_file=token_file, **kw)


def _snapshot(*, path: str | None, datastack: str, version: int,
              resolution_nm: tuple[float, float, float] | None, **_: Any) -> Source:
    if not path:
        raise ValueError("--source snapshot needs a PATH: --source snapshot DIR")
    from .snapshot import SnapshotSource

    return SnapshotSource(path, datastack=datastack, version=version, resolution_nm=resolution_nm)


def _volume(*, path: str | None, seed: int, fraction: float, **_: Any) -> Source:
    if not path:
        raise ValueError("--source volume needs a cell table: --cells PATH")
    from .volume import VolumeSource

    return VolumeSource(path, seed=seed, fraction=fraction)


#: Every source by the name ``--source`` takes: a function of :func:`make_source`'s options.
SOURCES: dict[str, Callable[..., Source]] = {
    "column": _column, "surrogate": _surrogate, "cave": _cave, "snapshot": _snapshot, "volume": _volume,
}


def make_source(kind: str = "column", *, path: str | None = None, version: int = 1300, seed: int = 0,
                datastack: str = "minnie65_public", auth_token: str | None = None,
                token_file: str | None = None, fraction: float = 1.0,
                resolution_nm: tuple[float, float, float] | None = None, query: Any = None,
                batch_size: int | None = None) -> Source:
    """The source ``kind`` of :data:`SOURCES`: ``column`` (the bundled real MICrONS V1 column,
    the default), ``surrogate`` (``seed``), ``cave`` (``datastack`` at ``version``, a token; with a ``query``, a
    :class:`~.population.PopulationQuery`: the cells it selects; ``batch_size`` ids a request),
    ``snapshot`` (``path``; positions in ``resolution_nm`` nm per unit if given, see
    :mod:`.snapshot`), ``volume`` (``path`` = the cell table, ``seed``, ``fraction``)."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}: use {', '.join(SOURCES)} (snapshot with a PATH)")
    if resolution_nm is not None and kind != "snapshot":
        raise ValueError(f"--resolution is for --source snapshot, not {kind}")
    if query is not None and kind != "cave":
        raise ValueError(f"a population query is for --source cave, not {kind}")
    return SOURCES[kind](path=path, version=version, seed=seed, datastack=datastack, auth_token=auth_token,
                         token_file=token_file, fraction=fraction, resolution_nm=resolution_nm, query=query,
                         batch_size=batch_size)
