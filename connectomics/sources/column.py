"""``column``: the real MICrONS V1 column, bundled with the package (the default source).

The snapshot in ``connectomics/data/v1_column/`` (derived by ``scripts/make_column_snapshot.py``;
see its ``README.md``) holds the 1,351 proofread neurons of the V1 column of Schneider-Mizell et
al. (2025) and the synapse counts between them: 141,452 synapses over 75,251 connected ordered
pairs. Every file's sha256 is checked against ``manifest.json`` before anything is read; a damaged
file is refused with its name.

It is served as the canonical CAVE tables (:mod:`connectomics.schema`), so the build is the same
as for a CAVE pull:

* the column reference, metamodel and m-type tables: one row per neuron (``id`` = matrix index + 1,
  ``target_id`` = nucleus id, the labels as MICrONS spells them, ``classification_system``
  ``aibs_coarse_excitatory``/``_inhibitory`` from the neuron's E/I class);
* the nucleus table: nucleus id, root id, nucleus volume (um^3), soma position (v1718 voxels x
  4 x 4 x 40 nm), from which layers are assigned by depth as for any source;
* the proofreading table: one row per neuron, statuses and strategies unknown (None);
* synapses: **one row per counted synapse** (``id`` = row number: the matrix has no synapse ids),
  with ``size`` and ``ctr_pt_position_*`` **NaN**: the source has per-pair counts only, so every
  graph built from it carries ``summed_size`` NaN (missing, not invented).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..cache import PartStore
from ..schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE,
    conform,
)
from .base import Source, SourceError, rows_in

#: The bundled snapshot (package data).
SNAPSHOT_DIR = Path(__file__).resolve().parents[1] / "data" / "v1_column"
MANIFEST = "manifest.json"
CELL_COLUMNS = ("nucleus_id", "root_id", "cell_type", "mtype", "ei_class", "volume_um3",
                "pt_position_x", "pt_position_y", "pt_position_z")
CONNECTION_COLUMNS = ("pre_nucleus_id", "post_nucleus_id", "n_synapses")
_SYSTEM = {"E": "aibs_coarse_excitatory", "I": "aibs_coarse_inhibitory"}


class SnapshotIntegrityError(SourceError):
    """A file of the bundled snapshot is missing, damaged or inconsistent."""


@dataclass(frozen=True)
class ColumnSnapshot:
    """The snapshot's two tables (as stored) and its manifest."""

    cells: pd.DataFrame        # one row per neuron, columns CELL_COLUMNS
    connections: pd.DataFrame  # one row per connected ordered pair, columns CONNECTION_COLUMNS
    manifest: dict
    folder: Path

    @property
    def fingerprint(self) -> str:
        """sha256 over the files' sha256 (names sorted): names this exact snapshot."""
        files = self.manifest["files"]
        return hashlib.sha256("".join(f"{n}:{files[n]['sha256']};" for n in sorted(files)).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        assert isinstance(files, dict) and all("sha256" in e for e in files.values())
    except FileNotFoundError:
        raise SnapshotIntegrityError(f"{path}: missing: the column snapshot is incomplete") from None
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as e:
        raise SnapshotIntegrityError(f"{path}: not a valid snapshot manifest ({type(e).__name__})") from None
    for name in ("cells.parquet", "connections.parquet"):
        if name not in files:
            raise SnapshotIntegrityError(f"{path}: lists no {name}")
    return manifest


def _verify(folder: Path, manifest: dict) -> None:
    """Refuse (naming the file) any listed file that is absent or whose sha256 differs."""
    for name, entry in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise SnapshotIntegrityError(f"{path}: missing from the column snapshot")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise SnapshotIntegrityError(
                f"{path}: checksum {digest[:12]}... does not match {MANIFEST} ({entry['sha256'][:12]}...): "
                "the file was altered or damaged; reinstall the package or re-derive it with "
                "scripts/make_column_snapshot.py"
            )


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise SnapshotIntegrityError(f"{path}: unreadable ({e})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SnapshotIntegrityError(f"{path}: lacks column(s) {missing}")
    return df[list(columns)]


def load_column_snapshot(folder: str | Path | None = None) -> ColumnSnapshot:
    """Verify (sha256 of every file against the manifest) and read the snapshot in ``folder``
    (default: the bundled one). Raises :class:`SnapshotIntegrityError` naming the bad file."""
    folder = Path(folder) if folder is not None else SNAPSHOT_DIR
    manifest = _read_manifest(folder)
    _verify(folder, manifest)
    cells = _read(folder / "cells.parquet", CELL_COLUMNS)
    conn = _read(folder / "connections.parquet", CONNECTION_COLUMNS)
    nuc = pd.Index(cells["nucleus_id"])
    if not nuc.is_unique or not cells["root_id"].is_unique:
        raise SnapshotIntegrityError(f"{folder / 'cells.parquet'}: duplicate nucleus or root ids")
    pre, post = nuc.get_indexer(conn["pre_nucleus_id"]), nuc.get_indexer(conn["post_nucleus_id"])
    bad = (pre < 0) | (post < 0) | (pre == post) | (conn["n_synapses"].to_numpy() < 1)
    if bad.any():
        raise SnapshotIntegrityError(
            f"{folder / 'connections.parquet'}: row {int(bad.nonzero()[0][0])}: endpoint outside the cells, "
            "an autapse or a count below 1")
    return ColumnSnapshot(cells=cells, connections=conn, manifest=manifest, folder=folder)


class ColumnSource(Source):
    """The bundled real V1 column as canonical CAVE tables (see module docstring)."""

    kind = "column"
    provenance = "read from the bundled snapshot"

    def __init__(self, folder: str | Path | None = None) -> None:
        self.snapshot = load_column_snapshot(folder)
        self.version = int(self.snapshot.manifest.get("snapshot_version", 1))
        # the fingerprint keys the cache: a changed snapshot is never served from an old cache
        self.namespace = f"v1_column-{self.snapshot.fingerprint[:12]}"

    @cached_property
    def _tables(self) -> dict[str, pd.DataFrame]:
        c = self.snapshot.cells
        vox = np.asarray(self.snapshot.manifest.get("voxel_nm", (4.0, 4.0, 40.0)), dtype=float)
        pos = {f"pt_position_{a}": c[f"pt_position_{a}"].to_numpy(float) * vox[i] for i, a in enumerate("xyz")}
        ids = np.arange(1, len(c) + 1, dtype=np.int64)
        system = c["ei_class"].map(_SYSTEM).fillna("unknown").to_numpy()
        typed = {"id": ids, "target_id": c["nucleus_id"].to_numpy(), "pt_root_id": c["root_id"].to_numpy(), **pos}
        return {
            COLUMN_TABLE: pd.DataFrame({**typed, "classification_system": system, "cell_type": c["cell_type"]}),
            CELL_TYPE_TABLE: pd.DataFrame({**typed, "classification_system": system, "cell_type": c["cell_type"]}),
            MTYPE_TABLE: pd.DataFrame({**typed, "classification_system": "allen_column_mtypes",
                                       "cell_type": c["mtype"]}),
            NUCLEUS_TABLE: pd.DataFrame({"id": c["nucleus_id"].to_numpy(), "pt_root_id": c["root_id"].to_numpy(),
                                         "volume": c["volume_um3"].to_numpy(float), **pos}),
            PROOFREADING_TABLE: pd.DataFrame({
                "id": ids, "pt_root_id": c["root_id"].to_numpy(), "valid_id": c["root_id"].to_numpy(),
                "status_dendrite": None, "status_axon": None, "strategy_dendrite": None, "strategy_axon": None,
            }),
        }

    def fetch_table(self, table: str, *, filter_in: Mapping[str, Sequence] | None = None,
                    progress: bool = True) -> pd.DataFrame:
        if table not in self._tables:
            raise SourceError(f"column: no table {table!r}; it has {sorted(self._tables)} and {SYNAPSE_TABLE}")
        return conform(rows_in(self._tables[table], filter_in), table,
                       origin=f"column snapshot {self.snapshot.folder}")

    def fetch_synapses(self, root_ids: np.ndarray, *, parts: PartStore | None = None,
                       progress: bool = True) -> pd.DataFrame:
        """One row per counted synapse between ``root_ids`` (size and position NaN; see module doc)."""
        c, e = self.snapshot.cells, self.snapshot.connections
        root_of = pd.Series(c["root_id"].to_numpy(), index=c["nucleus_id"].to_numpy())
        pre = root_of.loc[e["pre_nucleus_id"]].to_numpy(np.int64)
        post = root_of.loc[e["post_nucleus_id"]].to_numpy(np.int64)
        keep = np.isin(pre, root_ids) & np.isin(post, root_ids)
        n = e["n_synapses"].to_numpy(np.int64)[keep]
        m = int(n.sum())
        nan = np.full(m, np.nan)
        syn = pd.DataFrame({
            "id": np.arange(1, m + 1, dtype=np.int64),
            "pre_pt_root_id": np.repeat(pre[keep], n), "post_pt_root_id": np.repeat(post[keep], n),
            "size": nan, "ctr_pt_position_x": nan, "ctr_pt_position_y": nan, "ctr_pt_position_z": nan,
        })
        return conform(syn, SYNAPSE_TABLE, origin=f"column snapshot {self.snapshot.folder}")

    def describe(self) -> dict:
        m = self.snapshot.manifest
        return {
            **super().describe(), "snapshot": m.get("snapshot"), "fingerprint": self.snapshot.fingerprint,
            "inputs": {k: {"repository": v.get("repository"), "commit": v.get("commit")}
                       for k, v in m.get("inputs", {}).items()},
            "citation": m.get("citation"),
            "note": "real MICrONS synapse counts between the 1,351 V1 column neurons; no per-synapse "
                    "sizes (summed_size is NaN)",
        }
