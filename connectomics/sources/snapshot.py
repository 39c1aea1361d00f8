"""``snapshot PATH``: CAVE tables from a folder of static dumps (CSV, CSV.gz or Parquet).

Each table is found by name: ``<table>.parquet``, ``<table>.csv``, ``<table>.csv.gz``, or a folder
``<table>/`` of such files (large tables such as ``synapses_pni_2`` come in many parts). Columns
are those of the CAVE table. Positions may be split (``pt_position_x``, ``_y``, ``_z``) or one
column holding ``"[x y z]"`` (the form of the MICrONS static dumps); they are in voxels of
``resolution_nm`` (default 4 x 4 x 40 nm, the CAVE default) unless ``resolution_nm=(1, 1, 1)``.

Synapses are streamed file by file (Parquet row group by row group) and filtered to the requested
root ids, so a dump larger than memory can be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..cache import PartStore
from ..schema import SCHEMAS, SYNAPSE_TABLE, SchemaError, conform
from .base import Source, SourceError

_SUFFIXES = (".parquet", ".csv.gz", ".csv")
_POS_PREFIXES = ("pt_position", "ctr_pt_position", "pre_pt_position", "post_pt_position")


def _table_files(root: Path, table: str) -> list[Path]:
    for suf in _SUFFIXES:
        p = root / f"{table}{suf}"
        if p.exists():
            return [p]
    folder = root / table
    if folder.is_dir():
        files = sorted(f for f in folder.iterdir() if f.name.endswith(_SUFFIXES))
        if files:
            return files
    return []


def _split_positions(df: pd.DataFrame, path: Path, resolution: np.ndarray) -> pd.DataFrame:
    """Split ``"[x y z]"`` position columns and scale voxel positions to nm."""
    for prefix in _POS_PREFIXES:
        if prefix in df.columns and f"{prefix}_x" not in df.columns:
            text = df[prefix].astype(str).str.strip("[]() ").str.replace(",", " ")
            parts = text.str.split(expand=True)
            if parts.shape[1] != 3:
                raise SchemaError(f"{path}: column {prefix!r} does not hold 3 coordinates per row")
            for i, a in enumerate("xyz"):
                vals = pd.to_numeric(parts[i], errors="coerce")
                if vals.isna().any():
                    row = int(vals.isna().to_numpy().nonzero()[0][0])
                    raise SchemaError(f"{path}: row {row}: {prefix} {df[prefix].iloc[row]!r} is not 3 numbers")
                df[f"{prefix}_{a}"] = vals
        for i, a in enumerate("xyz"):
            col = f"{prefix}_{a}"
            if col in df.columns:
                df[col] = pd.to_numeric(df[col], errors="coerce") * float(resolution[i])
    return df


class SnapshotSource(Source):
    """Tables read from a folder of per-table dumps (see module docstring)."""

    kind = "snapshot"

    def __init__(self, path: str | Path, *, datastack: str = "minnie65_public", version: int = 0,
                 resolution_nm: Sequence[float] = (4.0, 4.0, 40.0), batch_rows: int = 1_000_000) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"snapshot: {self.path} is not a folder")
        self.namespace = f"snapshot-{datastack}"
        self.version = int(version)
        self.resolution = np.asarray(resolution_nm, dtype=float)
        self.batch_rows = batch_rows

    def _files(self, table: str) -> list[Path]:
        files = _table_files(self.path, table)
        if not files:
            raise SourceError(
                f"snapshot {self.path}: no file for table {table!r} "
                f"(looked for {table}.parquet, {table}.csv[.gz] or a folder {table}/)"
            )
        return files

    def _read_batches(self, path: Path) -> Iterator[pd.DataFrame]:
        try:
            if path.name.endswith(".parquet"):
                for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(path, chunksize=self.batch_rows, index_col=False)
        except (pa.ArrowInvalid, OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise SourceError(f"{path}: unreadable ({e})") from None

    def _conform(self, df: pd.DataFrame, table: str, path: Path, offset: int) -> pd.DataFrame:
        df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])
        df.index = pd.RangeIndex(offset, offset + len(df))
        df = _split_positions(df, path, self.resolution)
        if table == SYNAPSE_TABLE and "size" in df.columns:
            df["size"] = pd.to_numeric(df["size"], errors="coerce").round()
        return conform(df, table, origin=str(path))

    def fetch_table(self, table: str, *, filter_in: Mapping[str, Sequence] | None = None,
                    progress: bool = True) -> pd.DataFrame:
        if table not in SCHEMAS:
            raise SourceError(f"snapshot: unknown table {table!r}")
        frames = []
        for path in self._files(table):
            offset = 0
            for chunk in self._read_batches(path):
                df = self._conform(chunk, table, path, offset)
                offset += len(chunk)
                for col, values in (filter_in or {}).items():
                    df = df[df[col].isin(np.asarray(values))]
                frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def fetch_synapses(self, root_ids: np.ndarray, *, parts: PartStore | None = None,
                       progress: bool = True) -> pd.DataFrame:
        from tqdm.auto import tqdm

        roots = np.unique(np.asarray(root_ids, dtype=np.int64))
        frames = []
        files = self._files(SYNAPSE_TABLE)
        for path in tqdm(files, desc="synapses", unit="file", disable=not progress or len(files) == 1):
            offset = 0
            for chunk in self._read_batches(path):
                df = self._conform(chunk, SYNAPSE_TABLE, path, offset)
                offset += len(chunk)
                pre, post = df["pre_pt_root_id"].to_numpy(), df["post_pt_root_id"].to_numpy()
                keep = np.isin(pre, roots) & np.isin(post, roots) & (pre != post)  # no autapses, as CAVE
                frames.append(df[keep])
        return pd.concat(frames, ignore_index=True)

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path.resolve()),
                "resolution_nm": self.resolution.tolist()}

