"""Pull the tables of a V1 column from a source into the Parquet cache (or read them from it)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .cache import TableCache
from .schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, COLUMN_TABLES, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE,
    SYNAPSE_TABLE,
)
from .sources.base import Source


def _filters(table: str, reference: pd.DataFrame) -> dict | None:
    """Which rows of ``table`` belong to the cells of the column reference table ``reference``
    (CAVE ``filter_in_dict``)."""
    targets = reference["target_id"].tolist()
    roots = reference["pt_root_id"].tolist()
    return {
        COLUMN_TABLE: None,
        MTYPE_TABLE: {"target_id": targets},
        CELL_TYPE_TABLE: {"target_id": targets},
        NUCLEUS_TABLE: {"id": targets},
        PROOFREADING_TABLE: {"pt_root_id": roots},
    }[table]


def pull_column_tables(
    source: Source, cache: TableCache, *, tables: Sequence[str] = COLUMN_TABLES, refresh: bool = False,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Every table of ``tables`` (default :data:`COLUMN_TABLES`, in that order: the column table
    first), from the cache when present, else from ``source``.

    A second call reads the cache and queries nothing (unless ``refresh``, which first empties the
    cache folder, a corrupt manifest included: see :meth:`TableCache.reset`). Synapses are pulled
    last, restricted to the column's root ids, in resumable batches.
    """
    pulled: dict[str, pd.DataFrame] = {}
    if refresh:  # never reads the manifest it replaces, so a corrupt one is recovered too
        cache.reset()
    for table in tables:
        if cache.has(table):
            pulled[table] = cache.read(table)
            continue
        if table == SYNAPSE_TABLE:
            roots = np.sort(pulled[COLUMN_TABLE]["pt_root_id"].to_numpy(dtype=np.int64))
            parts = cache.parts(table)
            df = source.fetch_synapses(roots, parts=parts, progress=progress)
            query = {"pre_ids": "column root ids", "post_ids": "column root ids", "n_cells": len(roots)}
        else:
            flt = _filters(table, pulled[COLUMN_TABLE]) if table != COLUMN_TABLE else None
            df = source.fetch_table(table, filter_in=flt, progress=progress)
            query = {"filter_in": {k: f"{len(v)} values" for k, v in (flt or {}).items()}}
        cache.write(table, df, source=source.kind, datastack=source.namespace,
                    query={**source.describe(), **query})
        if table == SYNAPSE_TABLE:
            cache.parts(table).clear()
        pulled[table] = cache.read(table, verify=False)
    return pulled
