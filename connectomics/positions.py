"""The one reader of position columns, with explicit units.

CAVE tables give a point as split columns ``<prefix>_x``, ``<prefix>_y``, ``<prefix>_z`` or as one
column ``<prefix>`` holding ``"[x y z]"`` (the static dumps). Its unit is never guessed here: every
call names ``resolution_nm``, the nanometres per unit along x, y, z (``(1, 1, 1)`` for positions
already in nm, :data:`VOXEL_NM` for CAVE's 4 x 4 x 40 nm voxels). The result is always nm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .schema import SchemaError

#: nm per unit of CAVE's minnie65 voxels (x, y, z)
VOXEL_NM = (4.0, 4.0, 40.0)
#: nm per unit of a position already in nanometres
NM = (1.0, 1.0, 1.0)


def has_position(df: pd.DataFrame, prefix: str) -> bool:
    """Whether ``df`` holds the point ``prefix`` (split columns or one ``"[x y z]"`` column)."""
    return prefix in df.columns or all(f"{prefix}_{a}" in df.columns for a in "xyz")


def position_nm(df: pd.DataFrame, prefix: str, resolution_nm: Sequence[float], *, origin: str) -> np.ndarray:
    """The point ``prefix`` of every row in nm, (n, 3) float64.

    Split columns are preferred over a ``"[x y z]"`` column. Values are multiplied by
    ``resolution_nm`` (3 nm-per-unit factors). Non-numeric values are NaN (the caller's schema
    decides whether NaN is allowed); a text column without 3 numbers is a :class:`SchemaError`
    naming ``origin`` and the row.
    """
    res = np.asarray(resolution_nm, dtype=float).reshape(3)
    split = [f"{prefix}_{a}" for a in "xyz"]
    if all(c in df.columns for c in split):
        xyz = np.column_stack([pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in split])
        return xyz * res
    if prefix not in df.columns:
        raise SchemaError(f"{origin}: no position {prefix!r} (columns {split} or {prefix!r}); has {list(df.columns)}")
    text = df[prefix].astype(str).str.strip("[]() ").str.replace(",", " ")
    parts = text.str.split(expand=True)
    if parts.shape[1] != 3:
        raise SchemaError(f"{origin}: column {prefix!r} does not hold 3 coordinates per row")
    xyz = parts.apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.isnan(xyz).any(axis=1)
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise SchemaError(f"{origin}: row {row}: {prefix} {df[prefix].iloc[row]!r} is not 3 numbers")
    return xyz * res


def split_positions_nm(df: pd.DataFrame, prefixes: Sequence[str], resolution_nm: Sequence[float], *,
                       origin: str) -> pd.DataFrame:
    """``df`` with each point of ``prefixes`` it holds as split ``_x/_y/_z`` columns in nm."""
    for prefix in prefixes:
        if has_position(df, prefix):
            xyz = position_nm(df, prefix, resolution_nm, origin=origin)
            for i, a in enumerate("xyz"):
                df[f"{prefix}_{a}"] = xyz[:, i]
    return df
