"""Canonical column schemas of the CAVE tables the toolkit reads.

Every source (``cave``, ``snapshot``, ``surrogate``) returns these tables with exactly these
columns and dtypes, so nothing downstream can tell the sources apart except by the manifest.
Ids are int64; positions are float64 nanometres split into ``_x/_y/_z`` columns (caveclient's
``split_positions=True`` with ``desired_resolution=[1, 1, 1]``); labels are strings. A synapse's
``size`` (voxels) is float64 so that a source without per-synapse sizes (the bundled ``column``
snapshot holds counts only) can say so: NaN = unknown, never invented; likewise its
``ctr_pt_position_*``. The
proofreading flags ``status_dendrite`` / ``status_axon`` are nullable booleans (pandas
``boolean``: caveclient >= 8 returns them typed; older dumps' text is mapped by :data:`BOOL_TEXT`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INT = "int64"
FLOAT = "float64"
STR = "object"
#: nullable boolean (pandas ``BooleanDtype``; Parquet ``bool`` with nulls)
BOOL = "boolean"

#: Text forms of a boolean flag: Postgres/CSV dumps (``t``/``f``, ``True``/``False``, ``1``/``0``)
#: and the older public proofreading table (``non``: not proofread; ``clean``/``extended``: proofread).
BOOL_TEXT: dict[str, bool] = {
    "t": True, "true": True, "1": True, "yes": True, "clean": True, "extended": True,
    "f": False, "false": False, "0": False, "no": False, "non": False,
}

NUCLEUS_TABLE = "nucleus_detection_v0"
CELL_TYPE_TABLE = "aibs_metamodel_celltypes_v661"
COLUMN_TABLE = "allen_v1_column_types_slanted_ref"
MTYPE_TABLE = "allen_column_mtypes_v2"
PROOFREADING_TABLE = "proofreading_status_and_strategy"
SYNAPSE_TABLE = "synapses_pni_2"


def _pos(prefix: str) -> dict[str, str]:
    return {f"{prefix}_{a}": FLOAT for a in "xyz"}


_CELL_TYPE_COLUMNS = {
    "id": INT, "target_id": INT, "pt_root_id": INT,
    "classification_system": STR, "cell_type": STR, **_pos("pt_position"),
}

#: table name -> {column: dtype}
SCHEMAS: dict[str, dict[str, str]] = {
    NUCLEUS_TABLE: {"id": INT, "pt_root_id": INT, "volume": FLOAT, **_pos("pt_position")},
    CELL_TYPE_TABLE: dict(_CELL_TYPE_COLUMNS),
    COLUMN_TABLE: dict(_CELL_TYPE_COLUMNS),
    MTYPE_TABLE: dict(_CELL_TYPE_COLUMNS),
    PROOFREADING_TABLE: {
        "id": INT, "pt_root_id": INT, "valid_id": INT,
        "status_dendrite": BOOL, "status_axon": BOOL,
        "strategy_dendrite": STR, "strategy_axon": STR,
    },
    SYNAPSE_TABLE: {
        "id": INT, "pre_pt_root_id": INT, "post_pt_root_id": INT,
        "size": FLOAT, **_pos("ctr_pt_position"),
    },
}

#: Columns that may be NaN: what a count-only source cannot know (see the module docstring).
NULLABLE: dict[str, tuple[str, ...]] = {SYNAPSE_TABLE: ("size", *_pos("ctr_pt_position"))}

#: Columns that must not hold NaN (all ids, and positions but those of :data:`NULLABLE`).
NOT_NULL: dict[str, tuple[str, ...]] = {
    name: tuple(c for c, t in cols.items() if t in (INT, FLOAT) and c not in NULLABLE.get(name, ()))
    for name, cols in SCHEMAS.items()
}

#: Columns that must be unique within a table.
UNIQUE: dict[str, tuple[str, ...]] = {
    NUCLEUS_TABLE: ("id",),
    CELL_TYPE_TABLE: ("target_id",),
    COLUMN_TABLE: ("target_id", "pt_root_id"),
    MTYPE_TABLE: ("target_id",),
    SYNAPSE_TABLE: ("id",),
}

#: Tables a column graph is built from, in pull order (synapses last: they need the root ids).
COLUMN_TABLES: tuple[str, ...] = (
    COLUMN_TABLE, MTYPE_TABLE, CELL_TYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE,
)


class SchemaError(ValueError):
    """A table does not have the canonical columns, dtypes or contents."""


def conform(df: pd.DataFrame, table: str, *, origin: str | None = None) -> pd.DataFrame:
    """Select, order and cast the canonical columns of ``table``; raise :class:`SchemaError`.

    Integer columns must hold integers (no NaN, no fractional values); float columns numbers.
    ``origin`` (a file path, a URL) is named in every error.
    """
    where = f"{origin}: " if origin else ""
    schema = SCHEMAS[table]
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(f"{where}table {table!r} lacks column(s) {missing}; has {list(df.columns)}")
    out = {}
    for col, dtype in schema.items():
        s = df[col]
        if dtype == STR:
            out[col] = s.astype(object).where(s.notna(), None)
            continue
        if dtype == BOOL:
            out[col] = _to_bool(s, col, table, where)
            continue
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            conv = pd.to_numeric(s, errors="coerce")
            bad = conv.isna() & s.notna()
            if bad.any():
                row = s.index[bad.to_numpy().nonzero()[0][0]]
                raise SchemaError(
                    f"{where}table {table!r}: column {col!r} must be {dtype}, "
                    f"row {row} holds {s.loc[row]!r}"
                )
            s = conv
        if dtype == INT:
            if s.isna().any():
                row = s.index[s.isna().to_numpy().nonzero()[0][0]]
                raise SchemaError(f"{where}table {table!r}: column {col!r} is empty at row {row}")
            vals = s.to_numpy()
            if vals.dtype.kind == "f" and not np.all(np.mod(vals, 1) == 0):
                row = s.index[(np.mod(vals, 1) != 0).nonzero()[0][0]]
                raise SchemaError(
                    f"{where}table {table!r}: column {col!r} must be int64, row {row} holds {s.loc[row]!r}"
                )
            out[col] = s.astype(INT)
        else:
            out[col] = s.astype(FLOAT)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def _to_bool(s: pd.Series, col: str, table: str, where: str) -> pd.Series:
    """``s`` as a nullable boolean: bools and 0/1 as they are, text through :data:`BOOL_TEXT`."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        try:
            return s.astype(BOOL)
        except (TypeError, ValueError):
            pass  # e.g. 2.0: reported below
    values: list = []
    for row, v in s.items():
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            values.append(pd.NA)
        elif isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, float, np.number)) and v in (0, 1)):
            values.append(bool(v))
        elif str(v).strip().lower() in BOOL_TEXT:
            values.append(BOOL_TEXT[str(v).strip().lower()])
        else:
            raise SchemaError(f"{where}table {table!r}: column {col!r} must be a boolean, row {row} holds {v!r}")
    return pd.Series(values, index=s.index, dtype=BOOL)


def validate(df: pd.DataFrame, table: str, *, origin: str | None = None, allow_empty: bool = False) -> None:
    """Check a conformed table: dtypes, no NaN ids/positions, unique keys, not empty."""
    where = f"{origin}: " if origin else ""
    schema = SCHEMAS[table]
    if list(df.columns) != list(schema):
        raise SchemaError(f"{where}table {table!r} has columns {list(df.columns)}, expected {list(schema)}")
    for col, dtype in schema.items():
        if dtype != STR and str(df[col].dtype) != dtype:
            raise SchemaError(f"{where}table {table!r}: column {col!r} is {df[col].dtype}, expected {dtype}")
    if len(df) == 0 and not allow_empty:
        raise SchemaError(f"{where}table {table!r} is empty")
    for col in NOT_NULL[table]:
        isna = df[col].isna().to_numpy()
        if isna.any():
            row = int(isna.nonzero()[0][0])
            raise SchemaError(f"{where}table {table!r}: NaN in column {col!r} at row {row}")
    for col in UNIQUE.get(table, ()):
        dup = df[col].duplicated().to_numpy()
        if dup.any():
            row = int(dup.nonzero()[0][0])
            raise SchemaError(
                f"{where}table {table!r}: duplicate {col} {df[col].iloc[row]} at row {row}"
            )


def empty(table: str) -> pd.DataFrame:
    """An empty table with the canonical columns and dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in SCHEMAS[table].items()})
