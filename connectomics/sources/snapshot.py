"""``snapshot PATH``: CAVE tables from a folder of static dumps (CSV, CSV.gz or Parquet).

Each table is found by name: ``<table>.parquet``, ``<table>.csv``, ``<table>.csv.gz``, or a folder
``<table>/`` of such files (large tables such as ``synapses_pni_2`` come in many parts). Columns
are those of the CAVE table. Positions may be split (``pt_position_x``, ``_y``, ``_z``) or one
column holding ``"[x y z]"`` (the form of the MICrONS static dumps). Their unit, nm per unit
along x, y, z, is in order of precedence: ``resolution_nm`` (``--resolution X Y Z``); the
``dataframe_resolution`` a Parquet file carries (caveclient puts it in ``df.attrs``, which pandas
writes to the Parquet metadata key ``PANDAS_ATTRS``); else voxels of 4 x 4 x 40 nm (the CAVE
default). A table whose median soma depth falls outside the volume is refused with the resolution
that would put it inside (the usual mistake: nm read as voxels, or the reverse); so is a synapse
file whose median synapse (``ctr_pt_position``) depth does. A soma position that is missing or
not a number is refused naming its file and row.

The cache of a snapshot is keyed on its folder and its files' fingerprints (name, size,
modification time): another snapshot, or a changed file, gets a cache folder of its own.

Synapses are streamed file by file (Parquet row group by row group) and filtered to the requested
root ids, so a dump larger than memory can be read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..cache import PartStore
from ..positions import VOXEL_NM, split_positions_nm
from ..schema import SCHEMAS, SYNAPSE_TABLE, conform
from .base import Source, SourceError

_SUFFIXES = (".parquet", ".csv.gz", ".csv")
_POS_PREFIXES = ("pt_position", "ctr_pt_position", "pre_pt_position", "post_pt_position")
#: nm per unit (x, y, z) of a dump that says nothing: CAVE's voxels
DEFAULT_RESOLUTION_NM = VOXEL_NM
#: Units a position column is commonly in, tried when a table's depths fall outside the volume.
COMMON_RESOLUTIONS_NM: dict[str, tuple[float, float, float]] = {
    "nm": (1.0, 1.0, 1.0), "4x4x40 nm voxels": (4.0, 4.0, 40.0), "8x8x40 nm voxels": (8.0, 8.0, 40.0),
}
#: Soma depths (um below the pia) inside the minnie65 volume, with a margin.
VOLUME_DEPTH_UM = (-150.0, 1100.0)


def _parse_resolution(value: object, path: Path) -> np.ndarray:
    """``[x, y, z]`` or ``"x, y, z"`` (nm per unit) -> (3,) array; anything else: SourceError."""
    if isinstance(value, str):
        value = value.strip("[]() ").replace(",", " ").split()
    try:
        res = np.asarray(value, dtype=float).reshape(3)
    except (TypeError, ValueError):
        raise SourceError(
            f"{path}: dataframe_resolution {value!r} is not 3 numbers; pass --resolution X Y Z"
        ) from None
    if not np.all(np.isfinite(res) & (res > 0)):
        raise SourceError(f"{path}: dataframe_resolution {value!r} must be 3 positive numbers")
    return res


def parquet_resolution(path: Path) -> np.ndarray | None:
    """The ``dataframe_resolution`` (nm per unit, x y z) stored with a Parquet table, or None.

    Looked up in the ``df.attrs`` pandas writes (key ``PANDAS_ATTRS``), the ``attrs`` of the
    ``pandas`` metadata, and a plain ``dataframe_resolution`` key.
    """
    try:
        md = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as e:
        raise SourceError(f"{path}: unreadable ({e})") from None
    found: list[object] = []
    for key, pick in ((b"PANDAS_ATTRS", lambda d: d), (b"pandas", lambda d: d.get("attrs") or {})):
        if key in md:
            try:
                attrs = pick(json.loads(md[key]))
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(attrs, dict) and attrs.get("dataframe_resolution") is not None:
                found.append(attrs["dataframe_resolution"])
    if b"dataframe_resolution" in md:
        found.append(md[b"dataframe_resolution"].decode(errors="replace"))
    return _parse_resolution(found[0], path) if found else None


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


def _median_depth_um(xyz_nm: np.ndarray) -> float:
    from ..layers import depth_um

    return float(np.median(depth_um(xyz_nm)))


def check_depths(df: pd.DataFrame, table: str, resolution: np.ndarray, where: str,
                 prefix: str = "pt_position") -> None:
    """Refuse ``table`` (positions in nm, read at ``resolution``) if the median depth of its points
    ``prefix`` (somata; ``ctr_pt_position``: synapses, whose unknown ones are NaN) lies outside
    :data:`VOLUME_DEPTH_UM`, naming the unit that would put it inside."""
    cols = [f"{prefix}_{a}" for a in "xyz"]
    if cols[0] not in df.columns:
        return
    xyz = df[cols].to_numpy(dtype=float)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if not len(xyz):
        return
    lo, hi = VOLUME_DEPTH_UM
    depth = _median_depth_um(xyz)
    if lo <= depth <= hi:
        return
    hints = [f"the positions look like {name}: pass --resolution {' '.join(f'{c:g}' for c in cand)}"
             for name, cand in COMMON_RESOLUTIONS_NM.items()
             if not np.allclose(cand, resolution)
             and lo <= _median_depth_um(xyz / resolution * np.asarray(cand)) <= hi]
    hint = hints[0] if hints else "check their unit and pass --resolution X Y Z"
    what = "soma" if prefix == "pt_position" else f"{prefix}"
    raise SourceError(
        f"{where}: table {table!r}: read at {' x '.join(f'{r:g}' for r in resolution)} nm per unit, "
        f"the median {what} depth is {depth:.0f} um, outside the volume ({lo:g} to {hi:g} um below the "
        f"pia); {hint}"
    )


def _check_soma_positions(df: pd.DataFrame, table: str, where: str) -> None:
    """Refuse a row whose soma position (``pt_position``, nm) is missing or not a number."""
    cols = [f"pt_position_{a}" for a in "xyz"]
    if cols[0] not in SCHEMAS[table] or cols[0] not in df.columns:
        return
    bad = ~np.isfinite(df[cols].to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        row = df.index[bad.nonzero()[0][0]]
        raise SourceError(f"{where}: table {table!r}: row {row}: the soma position pt_position is missing "
                          "or not a number")


def _resolution_nm(resolution_nm: Sequence[float]) -> np.ndarray:
    """``--resolution X Y Z`` as (3,) nm per unit; anything but 3 positive numbers: SourceError."""
    try:
        res = np.asarray(resolution_nm, dtype=float).reshape(3)
    except (TypeError, ValueError):
        raise SourceError(f"--resolution {resolution_nm!r}: give 3 numbers, nm per unit along x y z") from None
    if not np.all(np.isfinite(res) & (res > 0)):
        raise SourceError(f"--resolution {' '.join(f'{r:g}' for r in res)}: must be positive (nm per "
                          "position unit along x y z)")
    return res


class SnapshotSource(Source):
    """Tables read from a folder of per-table dumps (see module docstring)."""

    kind = "snapshot"
    provenance = "read from snapshot"

    def __init__(self, path: str | Path, *, datastack: str = "minnie65_public", version: int = 0,
                 resolution_nm: Sequence[float] | None = None, batch_rows: int = 1_000_000) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise SourceError(f"snapshot: {self.path} is not a folder")
        self.namespace = f"snapshot-{datastack}"
        self.version = int(version)
        self.resolution = None if resolution_nm is None else _resolution_nm(resolution_nm)
        self.batch_rows = batch_rows

    @property
    def cache_version(self) -> str:
        """``<version>-<fingerprint>``: the fingerprint (12 hex digits) hashes the folder, the
        ``--resolution`` given and every table file's name, size and modification time."""
        h = hashlib.sha256(f"{self.path.resolve()}|{None if self.resolution is None else self.resolution.tolist()}".encode())
        for table in sorted(SCHEMAS):
            for f in _table_files(self.path, table):
                st = f.stat()
                h.update(f"|{f.relative_to(self.path)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return f"{self.version}-{h.hexdigest()[:12]}"

    def _files(self, table: str) -> list[Path]:
        files = _table_files(self.path, table)
        if not files:
            raise SourceError(
                f"snapshot {self.path}: no file for table {table!r} "
                f"(looked for {table}.parquet, {table}.csv[.gz] or a folder {table}/)"
            )
        return files

    def resolution_of(self, path: Path) -> np.ndarray:
        """nm per unit of ``path``'s positions: ``resolution_nm``, the file's own, or the default."""
        if self.resolution is not None:
            return self.resolution
        if path.name.endswith(".parquet"):
            res = parquet_resolution(path)
            if res is not None:
                return res
        return np.asarray(DEFAULT_RESOLUTION_NM)

    def _read_batches(self, path: Path, table: str) -> Iterator[pd.DataFrame]:
        try:
            if path.name.endswith(".parquet"):
                for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(path, chunksize=self.batch_rows, index_col=False)
        except pd.errors.EmptyDataError:
            raise SourceError(f"{path}: table {table!r}: the file is empty (no header, no rows)") from None
        except (pa.ArrowInvalid, OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise SourceError(f"{path}: table {table!r}: unreadable ({e})") from None

    def _conform(self, df: pd.DataFrame, table: str, path: Path, offset: int) -> pd.DataFrame:
        df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])
        df.index = pd.RangeIndex(offset, offset + len(df))
        df = split_positions_nm(df, _POS_PREFIXES, self.resolution_of(path), origin=str(path))
        if table != SYNAPSE_TABLE:
            _check_soma_positions(df, table, str(path))
        if table == SYNAPSE_TABLE and "size" in df.columns:
            df["size"] = pd.to_numeric(df["size"], errors="coerce").round()
        return conform(df, table, origin=str(path))

    def _rows(self, table: str, files: list[Path]) -> Iterator[tuple[Path, pd.DataFrame]]:
        """(file, conformed batch) of every file of ``table``; no rows at all is a SourceError."""
        n_rows = 0
        for path in files:
            offset = 0
            for chunk in self._read_batches(path, table):
                n_rows += len(chunk)
                yield path, self._conform(chunk, table, path, offset)
                offset += len(chunk)
        if n_rows == 0:
            names = ", ".join(str(f) for f in files)
            raise SourceError(f"snapshot: table {table!r} has no rows ({names})")

    def fetch_table(self, table: str, *, filter_in: Mapping[str, Sequence] | None = None,
                    progress: bool = True) -> pd.DataFrame:
        if table not in SCHEMAS:
            raise SourceError(f"snapshot: unknown table {table!r}")
        frames = []
        files = self._files(table)
        for path, df in self._rows(table, files):
            check_depths(df, table, self.resolution_of(path), str(path))
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
        bar = tqdm(total=len(files), desc="synapses", unit="file", disable=not progress or len(files) == 1)
        with bar:
            last = None
            for path, df in self._rows(SYNAPSE_TABLE, files):
                if last is not None and path != last:
                    bar.update()
                last = path
                check_depths(df, SYNAPSE_TABLE, self.resolution_of(path), str(path), prefix="ctr_pt_position")
                pre, post = df["pre_pt_root_id"].to_numpy(), df["post_pt_root_id"].to_numpy()
                keep = np.isin(pre, roots) & np.isin(post, roots) & (pre != post)  # no autapses, as CAVE
                frames.append(df[keep])
            bar.update()
        return pd.concat(frames, ignore_index=True)

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path.resolve()),
                "resolution_nm": (self.resolution.tolist() if self.resolution is not None else
                                  f"each file's dataframe_resolution, else {list(DEFAULT_RESOLUTION_NM)}"),
                "files": self.cache_version.split("-", 1)[1]}
