"""The interface every table source implements: ``column``, ``cave``, ``snapshot`` and ``surrogate``.

A source returns CAVE tables in the canonical schemas of :mod:`connectomics.schema`: same
columns, same dtypes, whichever source. Only :meth:`Source.describe` (written to the manifest)
tells them apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cache import PartStore, TableCache


class SourceError(RuntimeError):
    """A source could not deliver a table (bad file, rejected token, server error...)."""


def rows_in(df: pd.DataFrame, filter_in: Mapping[str, Sequence] | None) -> pd.DataFrame:
    """The rows of ``df`` whose ``column`` value is in ``filter_in[column]``, for every column
    given (a CAVE ``filter_in_dict``, applied by the sources that hold their tables in memory)."""
    for col, values in (filter_in or {}).items():
        df = df[df[col].isin(np.asarray(values))]
    return df


class Source(ABC):
    #: "column" | "cave" | "snapshot" | "surrogate" | "volume"
    kind: str
    #: cache namespace: the datastack name, or "surrogate"
    namespace: str
    #: materialization version, or the surrogate's seed
    version: int
    #: how the tables came to be, for messages: "pulled from CAVE", "generated", ...
    provenance: str = "fetched"

    @property
    def cache_version(self) -> int | str:
        """The cache folder's version key (``<cache>/<namespace>/v<cache_version>``): the version,
        or for a source read from files the version and the files' fingerprint."""
        return self.version

    @abstractmethod
    def fetch_table(
        self, table: str, *, filter_in: Mapping[str, Sequence] | None = None, progress: bool = True
    ) -> pd.DataFrame:
        """A whole table, or the rows whose ``column`` value is in ``filter_in[column]``.

        Returns the canonical columns of :data:`connectomics.schema.SCHEMAS[table]`.
        """

    @abstractmethod
    def fetch_synapses(
        self, root_ids: np.ndarray, *, parts: PartStore | None = None, progress: bool = True
    ) -> pd.DataFrame:
        """Synapses (``synapses_pni_2`` schema) whose pre- and postsynaptic root ids are both in
        ``root_ids``. A source that pulls in batches stores each finished batch in ``parts`` and
        skips batches already there, so an interrupted pull resumes without loss or duplication.
        """

    def pull_tables(self, cache: TableCache, *, refresh: bool = False, progress: bool = True,
                    client: Any = None) -> tuple[dict[str, pd.DataFrame], list[Path], bool]:
        """The cell tables (``COLUMN_TABLES`` but synapses), the synapse table's Parquet files and
        whether everything was already cached; pulled into ``cache`` where missing (see
        :func:`connectomics.pull.pull_column_tables`). ``client``: a Dask client a source may use
        to produce its tables (only the volume does)."""
        from ..pull import pull_column_tables
        from ..schema import COLUMN_TABLES, SYNAPSE_TABLE

        had_all = not refresh and all(cache.has(t) for t in COLUMN_TABLES)
        tables = pull_column_tables(self, cache, refresh=refresh, progress=progress)
        tables.pop(SYNAPSE_TABLE, None)
        return tables, [cache.path(SYNAPSE_TABLE)], had_all

    #: True when the source checks its cell-type labels itself (against a datastack profile), so
    #: the build keeps labels outside the MICrONS column vocabulary
    own_vocabulary: bool = False

    def adjust_nodes(self, nodes: pd.DataFrame, bounds: Any) -> pd.DataFrame:
        """The graph nodes as the build assembled them, adjusted to this source (default: as
        they are; a datastack with its own depth frame recomputes ``depth_um`` and ``layer``)."""
        return nodes

    def describe(self) -> dict:
        """What the manifest records of this source (never a token)."""
        return {"source": self.kind, "datastack": self.namespace, "version": self.version}
