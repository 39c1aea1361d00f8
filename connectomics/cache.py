"""Parquet cache of pulled tables, with a checksummed manifest and atomic writes.

Layout::

    <root>/<namespace>/v<version>/<table>.parquet
    <root>/<namespace>/v<version>/<table>.parts/part-<key>.parquet   (batches of a pull in progress)
    <root>/<namespace>/v<version>/<table>/part-<nnnnn>.parquet       (a partitioned table)
    <root>/<namespace>/v<version>/manifest.json

``namespace`` is the datastack (``minnie65_public``) or ``surrogate``; ``version`` the
materialization version or the surrogate's seed (a snapshot's also holds its files' fingerprint).
Each file is written to a temporary name in the same folder, fsynced, then renamed
(:mod:`connectomics.atomic_io`), so a reader never sees half a file. The manifest records per
table: source, datastack, version, query and filters, rows, schema, sha256, caveclient version and
creation time. A partitioned table (too large for one file: the volume's synapses) has one
manifest entry per part (``<table>/part-<nnnnn>``) and one for the table that lists its parts once
all are written. A file whose checksum or schema disagrees with its manifest entry is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic_io import atomic_path, sha256_of, write_json_atomic
from .schema import SCHEMAS, conform, validate

MANIFEST = "manifest.json"


class CacheError(RuntimeError):
    """A cache file is missing from the manifest, corrupt, or disagrees with it."""


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)


def read_parquet_checked(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file; a truncated or corrupt one raises :class:`CacheError` naming it."""
    try:
        return pq.read_table(path, columns=columns).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise CacheError(f"{path}: not a readable Parquet file ({e})") from None


def _schema_of(df: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in df.dtypes.items()}


def parquet_schema(path: Path) -> dict[str, str]:
    """``{column: pandas dtype}`` of a Parquet file as :func:`read_parquet_checked` reads it back
    (the Parquet round trip can change a dtype, e.g. an object column of bools reads as ``bool``)."""
    try:
        return _schema_of(pq.read_schema(path).empty_table().to_pandas())
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise CacheError(f"{path}: not a readable Parquet file ({e})") from None


def _caveclient_version() -> str | None:
    try:
        import caveclient

        return caveclient.__version__
    except Exception:  # pragma: no cover - caveclient is a dependency
        return None


class PartStore:
    """Finished batches of one table's pull, so an interrupted pull resumes where it stopped.

    Keys are strings that sort in batch order (e.g. ``00017``). A part is written atomically, so
    after a crash each part is either complete or absent.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"part-{key}.parquet"

    def done(self, key: str) -> bool:
        return self._path(key).exists()

    def keys(self) -> list[str]:
        if not self.folder.exists():
            return []
        return sorted(p.name[len("part-"):-len(".parquet")] for p in self.folder.glob("part-*.parquet"))

    def write(self, key: str, df: pd.DataFrame) -> None:
        write_parquet_atomic(df, self._path(key))

    def read(self, key: str) -> pd.DataFrame:
        return read_parquet_checked(self._path(key))

    def read_all(self, table: str) -> pd.DataFrame:
        frames = [self.read(k) for k in self.keys()]
        if not frames:
            from .schema import empty

            return empty(table)
        return pd.concat(frames, ignore_index=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class TableCache:
    """The cached tables of one (namespace, version)."""

    def __init__(self, root: str | os.PathLike, namespace: str, version: int | str) -> None:
        self.root = Path(root)
        self.namespace = namespace
        self.version = version
        self.dir = self.root / namespace / f"v{version}"

    # -- manifest ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def manifest(self) -> dict[str, dict]:
        """The manifest's entries; one that is not JSON, or not an object of entry objects, is a
        :class:`CacheError` naming the file."""
        if not self.manifest_path.exists():
            return {}
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CacheError(
                f"{self.manifest_path}: corrupt manifest ({e}); run again with --refresh to rebuild it"
            ) from None
        if not isinstance(manifest, dict) or not all(isinstance(e, dict) for e in manifest.values()):
            raise CacheError(
                f"{self.manifest_path}: not a manifest (a JSON object of table entries); run again "
                "with --refresh to rebuild it")
        return manifest

    def update_manifest(self, entries: Mapping[str, dict | None]) -> None:
        """Set (or, for None, remove) manifest entries, rewriting the manifest atomically."""
        m = self.manifest()
        for key, entry in entries.items():
            if entry is None:
                m.pop(key, None)
            else:
                m[key] = entry
        write_json_atomic(self.manifest_path, m)

    # -- tables -----------------------------------------------------------------------------
    def path(self, table: str) -> Path:
        return self.dir / f"{table}.parquet"

    def has(self, table: str) -> bool:
        return self.path(table).exists() and table in self.manifest()

    def parts(self, table: str) -> PartStore:
        return PartStore(self.dir / f"{table}.parts")

    def write(self, table: str, df: pd.DataFrame, *, source: str, query: dict | None = None,
              datastack: str | None = None) -> Path:
        """Conform, validate and write ``table`` atomically, then record it in the manifest."""
        if table in SCHEMAS:
            df = conform(df, table, origin=f"{source} {table}")
            validate(df, table, origin=f"{source} {table}")
        path = self.path(table)
        write_parquet_atomic(df, path)
        self.update_manifest({table: {
            "file": path.name,
            "source": source,
            "datastack": datastack or self.namespace,
            "version": self.version,
            "query": query or {},
            "rows": int(len(df)),
            "schema": parquet_schema(path),
            "sha256": sha256_of(path),
            "caveclient_version": _caveclient_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }})
        return path

    def read(self, table: str, columns: list[str] | None = None, verify: bool = True) -> pd.DataFrame:
        """Read a cached table, refusing it if its checksum or schema disagrees with the manifest."""
        path = self.path(table)
        entry = self.manifest().get(table)
        if entry is None or not path.exists():
            raise CacheError(f"{path}: not in the cache (no file or no manifest entry)")
        if verify:
            digest = sha256_of(path)
            if digest != entry["sha256"]:
                raise CacheError(
                    f"{path}: checksum {digest[:12]}... does not match the manifest "
                    f"({entry['sha256'][:12]}...); delete it or pull again with --refresh"
                )
        df = read_parquet_checked(path, columns=columns)
        if verify and columns is None:
            schema = _schema_of(df)
            if schema != entry["schema"]:
                raise CacheError(f"{path}: schema {schema} does not match the manifest {entry['schema']}")
            if len(df) != entry["rows"]:
                raise CacheError(f"{path}: {len(df)} rows, the manifest says {entry['rows']}")
        return df

    def reset(self) -> None:
        """Forget every cached table here: table files, unfinished parts and the manifest, read or
        not (a corrupt manifest is removed, never parsed). Other folders (``graph/``) are kept."""
        if not self.dir.exists():
            return
        for path in self.dir.glob("*.parquet"):
            path.unlink(missing_ok=True)
        for folder in self.dir.glob("*.parts"):
            shutil.rmtree(folder, ignore_errors=True)
        for table in SCHEMAS:  # partitioned tables
            shutil.rmtree(self.dir / table, ignore_errors=True)
        self.manifest_path.unlink(missing_ok=True)

    def drop(self, table: str) -> None:
        self.path(table).unlink(missing_ok=True)
        self.parts(table).clear()
        self.update_manifest({table: None})

    # -- partitioned tables -------------------------------------------------------------------
    def partition_path(self, table: str, b: int) -> Path:
        """File of partition ``b`` of ``table``."""
        return self.dir / f"{partition_key(table, b)}.parquet"

    def record_partitioned(self, table: str, parts: Sequence[dict], *, source: str,
                           query: dict | None = None, datastack: str | None = None) -> None:
        """Record ``table`` as complete: ``parts`` are the manifest entries of its partitions
        0..n-1 (as :func:`write_partition_file` returns them), already in the manifest."""
        digest = hashlib.sha256("".join(e["sha256"] for e in parts).encode()).hexdigest()
        self.update_manifest({table: {
            "file": f"{table}/", "partitioned": True,
            "parts": [partition_key(table, b) for b in range(len(parts))],
            "rows": int(sum(e["rows"] for e in parts)), "schema": dict(parts[0]["schema"]),
            "sha256": digest, "source": source, "datastack": datastack or self.namespace,
            "version": self.version, "query": query or {},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }})

    def partition_files(self, table: str, verify: bool = True) -> list[Path]:
        """The files of the complete partitioned ``table``, checked against the manifest."""
        m = self.manifest()
        entry = m.get(table)
        if entry is None or not entry.get("partitioned"):
            raise CacheError(f"{self.dir / table}: no complete partitioned {table} in the manifest")
        files = []
        for key in entry["parts"]:
            p = self.dir / f"{key}.parquet"
            e = m.get(key)
            if e is None or not p.exists():
                raise CacheError(f"{p}: partition missing (file or manifest entry)")
            if verify and sha256_of(p) != e["sha256"]:
                raise CacheError(f"{p}: checksum does not match the manifest; delete it or rebuild with --refresh")
            files.append(p)
        return files

    def drop_partitions(self, table: str) -> None:
        """Remove the partitioned ``table``: its folder and its manifest entries."""
        shutil.rmtree(self.dir / table, ignore_errors=True)
        m = self.manifest()
        self.update_manifest({k: None for k in m if k == table or k.startswith(table + "/")})


def partition_key(table: str, b: int) -> str:
    """Manifest key of partition ``b`` of ``table``; also its path (less ``.parquet``) in the cache."""
    return f"{table}/part-{b:05d}"


def write_partition_file(folder: str | os.PathLike, table: str, b: int, df: pd.DataFrame, **extra) -> dict:
    """Write partition ``b`` of ``table`` atomically into the cache folder ``folder``; return its
    manifest entry (file, rows, schema as read back, sha256, creation time, and ``extra``) for
    :meth:`TableCache.update_manifest`. Needs no :class:`TableCache`, so it runs as a Dask task."""
    path = Path(folder) / f"{partition_key(table, b)}.parquet"
    write_parquet_atomic(df, path)
    return {
        "file": f"{partition_key(table, b)}.parquet", "rows": int(len(df)), "schema": parquet_schema(path),
        "sha256": sha256_of(path), **extra,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
