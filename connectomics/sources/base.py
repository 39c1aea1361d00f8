"""The interface every table source implements: ``cave``, ``snapshot`` and ``surrogate``.

A source returns CAVE tables in the canonical schemas of :mod:`connectomics.schema`: same
columns, same dtypes, whichever source. Only :meth:`Source.describe` (written to the manifest)
tells them apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..cache import PartStore


class SourceError(RuntimeError):
    """A source could not deliver a table (bad file, rejected token, server error...)."""


class Source(ABC):
    #: "cave" | "snapshot" | "surrogate"
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

    def describe(self) -> dict:
        """What the manifest records of this source (never a token)."""
        return {"source": self.kind, "datastack": self.namespace, "version": self.version}
