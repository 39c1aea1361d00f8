"""``volume``: a surrogate of the whole minnie65 cubic millimetre. NOT MICrONS synapses.

Cells
    Every cell of a user-given table of typed somata (``--cells PATH``: CSV/CSV.gz/Parquet with
    ``cell_type``, ``pt_root_id`` and either ``pt_x/pt_y/pt_z`` in 4 x 4 x 40 nm voxels, the form
    of ``nriedman/microns`` ``data/cells_no_repeats.csv`` = 56,209 excitatory cells, or
    ``pt_position_x/y/z`` in nm), at its real position and with its real coarse type; its layer
    comes from its depth (:mod:`connectomics.layers`). ``fraction`` keeps a seeded random subset
    of the table's rows (a size knob for tests: synapses then scale about as ``fraction**2``).

    Plus **inhibitory cells at the column census's density**: the V1 column census of
    Schneider-Mizell et al. 2025 (Nature; :data:`connectomics.census.CENSUS`) has 163 inhibitory
    among 1,351 neurons (12.07 %, 163 per 1,188 excitatory cells). For ``n_exc`` excitatory cells
    the volume gets ``round(n_exc * 163 / 1188)`` inhibitory cells (minus any the table already
    holds), split over the census's inhibitory rows (type x layer: NGC 22 in L1; BC 17/13/9/19,
    MC 16/12/8/18, BPC 9/6/5/9 in L2/3/L4/L5/L6) by largest remainder. As in the column surrogate
    an inhibitory cell's depth is uniform in its layer's band
    (:func:`connectomics.sources.surrogate.layer_bands`); its lateral (x, z) position is that
    of a random excitatory cell of the same layer plus N(0, 20 um) jitter, so inhibitory cells
    follow the imaged volume's footprint. (The column census's fraction is applied to the
    volume; the m-type -> layer placement of the census is itself an assumption, see
    :mod:`connectomics.census`.) Inhibitory root ids start at :data:`INH_ROOT_ID_BASE`; all
    nucleus ids (:data:`NUCLEUS_ID_BASE` + rank by root id) and soma volumes are synthetic. The
    cell tables are those the column surrogate serves for its cells
    (:func:`connectomics.sources.surrogate.cell_tables`).

Synapses
    Drawn by the column surrogate's distance rule, pre cell by pre cell, by
    :class:`connectomics.synapse_sampler.SynapseSampler` (its module says how; the table depends
    only on the seed and the cells).

Cache layout (``<cache>/volume/v<seed>-<key>/``; ``key`` hashes the cell table, ``fraction``, the layer
bounds and :data:`GENERATOR_VERSION`)::

    <canonical cell tables>.parquet                      written like any source's tables
    synapses_pni_2/part-00000.parquet ...                one partition per block of pre cells
    manifest.json                                        one entry per partition
                                                         ("synapses_pni_2/part-00000") and, once
                                                         all exist, "synapses_pni_2" (partitioned)

Each partition is written to a temporary name, fsynced and renamed (complete or absent); a
partition is reused only if its file exists and its manifest entry's checksum matches, so an
interrupted generation resumes. Generation runs in-process or as one task per partition on a
Dask cluster (:func:`write_synapse_partitions`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import census
from ..atomic_io import sha256_of
from ..cache import CacheError, TableCache, partition_key, write_partition_file
from ..cell_types import check_labels, ei_class
from ..layers import LayerBounds, frame_um_to_nm, nm_to_frame_um
from ..positions import NM, VOXEL_NM, has_position, position_nm
from ..pull import pull_column_tables
from ..schema import COLUMN_TABLES, MTYPE_TABLE, SYNAPSE_TABLE, SchemaError, conform
from ..synapse_sampler import CHUNK_ROWS, PARTITION_CELLS, SynapseSampler
from .base import Source, SourceError, rows_in
from .surrogate import cell_tables, layer_bands

#: bump when the sampling changes: it is part of the cache version
GENERATOR_VERSION = 1
CENSUS_EXCITATORY = sum(n for _, t, _, n in census.CENSUS if ei_class(t) == "E")   # 1,188
CENSUS_INHIBITORY = sum(n for _, t, _, n in census.CENSUS if ei_class(t) == "I")   # 163
INH_ROOT_ID_BASE = 864691190000000000
NUCLEUS_ID_BASE = 10_000_000
LATERAL_JITTER_UM = 20.0
PART_FOLDER = SYNAPSE_TABLE
#: random streams of the cells (``SeedSequence([seed, stream])``); the synapses' is
#: :data:`connectomics.synapse_sampler.STREAM_SYNAPSES`
_STREAM_CELLS, _STREAM_SUBSET = 0, 1


# ------------------------------------------------------------------------------------------------
# cells
# ------------------------------------------------------------------------------------------------
def read_cell_table(cells: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A typed soma table -> ``root_id, cell_type, x_nm, y_nm, z_nm`` (see module docstring)."""
    origin = "cell table" if isinstance(cells, pd.DataFrame) else str(cells)
    if isinstance(cells, pd.DataFrame):
        df = cells
    else:
        path = Path(cells)
        if not path.is_file():
            raise SourceError(f"--cells {path}: no such file")
        try:
            df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as e:  # noqa: BLE001 - one clear line
            raise SourceError(f"{path}: cannot read the cell table ({e})") from None
    if has_position(df, "pt_position"):
        prefix, resolution = "pt_position", NM
    elif {"pt_x", "pt_y", "pt_z"} <= set(df.columns):
        prefix, resolution = "pt", VOXEL_NM
    else:
        raise SchemaError(f"{origin}: needs pt_x/pt_y/pt_z (voxels) or pt_position_x/y/z (nm); "
                          f"has {list(df.columns)}")
    for col in ("cell_type", "pt_root_id"):
        if col not in df.columns:
            raise SchemaError(f"{origin}: lacks column {col!r}; has {list(df.columns)}")
    # every type the surrogate has fitted statistics for (connectomics.census.PMAX_CLASSES)
    check_labels(df["cell_type"].reset_index(drop=True), census.PMAX_CLASSES + tuple(census.TYPE_ALIASES),
                 table=origin)
    pos = position_nm(df.reset_index(drop=True), prefix, resolution, origin=origin)
    roots = pd.to_numeric(df["pt_root_id"], errors="coerce")
    bad = np.isnan(pos).any(axis=1) | roots.isna().to_numpy()
    if bad.any():
        raise SchemaError(f"{origin}: row {int(bad.nonzero()[0][0])}: missing/non-numeric root id or position")
    roots = roots.to_numpy(np.int64)
    dup = pd.Series(roots).duplicated().to_numpy()
    if dup.any():
        raise SchemaError(f"{origin}: duplicate pt_root_id {roots[dup][0]} at row {int(dup.nonzero()[0][0])}")
    return pd.DataFrame({"root_id": roots, "cell_type": df["cell_type"].astype(str).to_numpy(),
                         "x_nm": pos[:, 0], "y_nm": pos[:, 1], "z_nm": pos[:, 2]})


def synthetic_cell_table(n_cells: int = 3000, seed: int = 0, width_um: tuple[float, float] = (800.0, 400.0),
                         bounds: LayerBounds | None = None) -> pd.DataFrame:
    """A stand-in for the real excitatory soma table (same columns: ``cell_type, pt_root_id,
    pt_x/pt_y/pt_z`` in voxels), for tests and benchmarks without ``../shared``: the census's
    excitatory type mix, depth uniform in each type's census band, lateral position uniform in a
    ``width_um`` (x, z) rectangle of the minnie65 frame."""
    bounds = bounds or LayerBounds()
    rng = np.random.default_rng(seed)
    bands = layer_bands(bounds)
    exc = bands[bands["cell_type"].map(ei_class) == "E"].reset_index(drop=True)
    rows = exc.loc[rng.choice(len(exc), size=n_cells, p=exc["n_cells"] / exc["n_cells"].sum())]
    depth = rng.uniform(rows["top_um"], rows["bottom_um"])
    lat = rng.uniform(0.0, 1.0, size=(n_cells, 2)) * np.asarray(width_um) + np.array([600.0, 650.0])
    nm = frame_um_to_nm(np.column_stack([lat[:, 0], depth, lat[:, 1]]))
    vox = np.rint(nm / np.asarray(VOXEL_NM)).astype(np.int64)
    return pd.DataFrame({
        "cell_type": rows["cell_type"].to_numpy(),
        "pt_root_id": 864691135000000000 + np.sort(rng.choice(10**9, n_cells, replace=False)),
        "pt_x": vox[:, 0], "pt_y": vox[:, 1], "pt_z": vox[:, 2],
    })


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    quota = weights / weights.sum() * total
    n = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - n), kind="stable")
    n[order[: total - n.sum()]] += 1
    return n


def inhibitory_counts(n_exc: int, n_inh_present: int = 0) -> pd.DataFrame:
    """Census inhibitory rows (mtype, cell_type, layer, n_cells) scaled to ``n_exc`` excitatory
    cells: ``round(n_exc * 163 / 1188) - n_inh_present`` cells in all (never below 0)."""
    table = census.census_table()
    inh = table[table["cell_type"].map(ei_class) == "I"]
    total = max(0, int(round(n_exc * CENSUS_INHIBITORY / CENSUS_EXCITATORY)) - n_inh_present)
    out = inh.copy()
    out["n_cells"] = _largest_remainder(inh["n_cells"].to_numpy(float), total) if total else 0
    return out


def volume_cells(table: pd.DataFrame, seed: int = 0, fraction: float = 1.0,
                 bounds: LayerBounds | None = None) -> pd.DataFrame:
    """Cells of the volume (the column surrogate's cell columns plus frame positions), sorted by
    root id; row = node index. ``table`` is :func:`read_cell_table`'s output."""
    bounds = bounds or LayerBounds()
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1.0:
        sub = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_SUBSET]))
        keep = np.sort(sub.permutation(len(table))[: max(1, int(round(fraction * len(table))))])
        table = table.iloc[keep].reset_index(drop=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_CELLS]))
    frame = nm_to_frame_um(table[["x_nm", "y_nm", "z_nm"]].to_numpy())
    layer = bounds.assign(frame[:, 1])
    ei = table["cell_type"].map(ei_class).to_numpy()
    exc_layer = layer[ei == "E"]
    exc_frame = frame[ei == "E"]
    if not len(exc_frame):
        raise SourceError("the cell table holds no excitatory cell")

    # inhibitory cells at the census density
    bands = layer_bands(bounds)
    counts = inhibitory_counts(int((ei == "E").sum()), int((ei == "I").sum()))
    rows = []
    for r in counts.itertuples():
        if r.n_cells == 0:
            continue
        pool = np.flatnonzero(exc_layer == r.layer)
        if not len(pool):
            pool = np.arange(len(exc_frame))
        anchor = exc_frame[rng.choice(pool, size=r.n_cells)]
        lat = anchor[:, [0, 2]] + rng.normal(0.0, LATERAL_JITTER_UM, size=(r.n_cells, 2))
        depth = rng.uniform(bands.loc[r.Index, "top_um"], bands.loc[r.Index, "bottom_um"], size=r.n_cells)
        rows.append(pd.DataFrame({"cell_type": r.cell_type, "mtype": r.mtype, "layer": r.layer,
                                  "fx": lat[:, 0], "fy": depth, "fz": lat[:, 1]}))
    inh = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["cell_type", "mtype", "layer", "fx", "fy", "fz"])
    n_inh = len(inh)
    inh_roots = INH_ROOT_ID_BASE + np.sort(rng.choice(10**9, size=n_inh, replace=False)).astype(np.int64)
    if np.isin(inh_roots, table["root_id"].to_numpy()).any():
        raise SourceError("synthetic inhibitory root ids collide with the cell table's; "
                          f"the table uses ids above {INH_ROOT_ID_BASE}")
    inh_frame = inh[["fx", "fy", "fz"]].to_numpy(float)
    inh_nm = frame_um_to_nm(inh_frame) if n_inh else np.zeros((0, 3))

    cells = pd.DataFrame({
        "root_id": np.concatenate([table["root_id"].to_numpy(np.int64), inh_roots]),
        "cell_type": np.concatenate([table["cell_type"].to_numpy(object), inh["cell_type"].to_numpy(object)]),
        "mtype": np.concatenate([np.full(len(table), "none", dtype=object), inh["mtype"].to_numpy(object)]),
        "layer": np.concatenate([layer, inh["layer"].to_numpy(object)]),
        "fx_um": np.concatenate([frame[:, 0], inh_frame[:, 0]]),
        "fy_um": np.concatenate([frame[:, 1], inh_frame[:, 1]]),
        "fz_um": np.concatenate([frame[:, 2], inh_frame[:, 2]]),
        "x_nm": np.concatenate([table["x_nm"].to_numpy(float), inh_nm[:, 0]]),
        "y_nm": np.concatenate([table["y_nm"].to_numpy(float), inh_nm[:, 1]]),
        "z_nm": np.concatenate([table["z_nm"].to_numpy(float), inh_nm[:, 2]]),
    })
    cells["volume_um3"] = np.round(rng.lognormal(np.log(250.0), 0.3, size=len(cells)), 3)
    cells = cells.sort_values("root_id", kind="stable").reset_index(drop=True)
    cells.insert(0, "nucleus_id", NUCLEUS_ID_BASE + np.arange(1, len(cells) + 1, dtype=np.int64))
    cells["ei"] = cells["cell_type"].map(ei_class).to_numpy()
    cells["pmax_class"] = [census.pmax_class(c, l) for c, l in zip(cells["cell_type"], cells["layer"])]
    return cells


# ------------------------------------------------------------------------------------------------
# partitions in the cache
# ------------------------------------------------------------------------------------------------
def write_partition(sampler: SynapseSampler, b: int, folder: str) -> dict:
    """Draw partition ``b`` and write it atomically under ``folder`` (a cache dir); returns its
    manifest entry. Runs in-process or as a Dask task."""
    t0 = time.perf_counter()
    df = sampler.partition(b)
    rows = sampler.rows_of(b)
    return write_partition_file(folder, SYNAPSE_TABLE, b, df, pre_cells=[rows.start, rows.stop],
                                seconds=round(time.perf_counter() - t0, 3))


def _complete_parts(cache: TableCache, sampler: SynapseSampler, verify: bool) -> dict[int, dict]:
    m = cache.manifest()
    done = {}
    for b in range(sampler.n_partitions):
        e = m.get(partition_key(SYNAPSE_TABLE, b))
        p = cache.partition_path(SYNAPSE_TABLE, b)
        rows = sampler.rows_of(b)
        if e is None or not p.exists() or e.get("pre_cells") != [rows.start, rows.stop]:
            continue
        if verify and sha256_of(p) != e["sha256"]:
            continue
        done[b] = e
    return done


def write_synapse_partitions(source: "VolumeSource", cache: TableCache, *, client=None,
                             progress: bool = True, verify: bool = True) -> list[Path]:
    """Write the missing partitions of ``source``'s synapse table into ``cache`` (on ``client``'s
    Dask workers if given, else here) and the table's manifest entry; returns the files."""
    from tqdm.auto import tqdm

    sampler = source.sampler
    n_parts = sampler.n_partitions
    folder = cache.dir / PART_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".part-*.tmp"):     # temp files of a killed writer
        stale.unlink(missing_ok=True)
    done = _complete_parts(cache, sampler, verify)
    todo = [b for b in range(n_parts) if b not in done]
    pending: dict[str, dict] = {}
    last = time.monotonic()

    def record(entry: dict, b: int) -> None:
        nonlocal last
        pending[partition_key(SYNAPSE_TABLE, b)] = {**entry, "source": source.kind, "query": source.describe()}
        done[b] = entry
        if time.monotonic() - last > 2.0:
            cache.update_manifest(pending)
            pending.clear()
            last = time.monotonic()

    with tqdm(total=n_parts, initial=n_parts - len(todo), unit="part", desc="volume synapses",
              disable=not progress) as bar:
        try:
            if client is None:
                for b in todo:
                    record(write_partition(sampler, b, str(cache.dir)), b)
                    bar.update()
            elif todo:
                from distributed import as_completed

                remote = client.scatter(sampler, broadcast=True)
                futures = {client.submit(write_partition, remote, b, str(cache.dir), pure=False): b
                           for b in todo}
                for fut in as_completed(futures):
                    record(fut.result(), futures[fut])
                    bar.update()
        finally:
            if pending:
                cache.update_manifest(pending)
    cache.record_partitioned(
        SYNAPSE_TABLE, [done[b] for b in range(n_parts)], source=source.kind, datastack=source.namespace,
        query={**source.describe(), "pre_ids": "all cells", "post_ids": "all cells",
               "partition_cells": sampler.partition_cells},
    )
    return cache.partition_files(SYNAPSE_TABLE, verify=False)


def ensure_tables(source: "VolumeSource", cache: TableCache, *, client=None, refresh: bool = False,
                  progress: bool = True) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """The canonical cell tables (written to ``cache`` if absent) and the synapse partition files
    (generated where missing)."""
    cell_tables = tuple(t for t in COLUMN_TABLES if t != SYNAPSE_TABLE)
    tables = pull_column_tables(source, cache, tables=cell_tables, refresh=refresh, progress=progress)
    try:
        files = cache.partition_files(SYNAPSE_TABLE)
        entry = cache.manifest()[SYNAPSE_TABLE]
        if entry["query"].get("partition_cells") != source.partition_cells:   # other blocks: redo
            cache.drop_partitions(SYNAPSE_TABLE)
            raise CacheError("partitioned with another block size")
    except CacheError:
        files = write_synapse_partitions(source, cache, client=client, progress=progress)
    return tables, files


# ------------------------------------------------------------------------------------------------
# the source
# ------------------------------------------------------------------------------------------------
def _digest_of(cells: str | os.PathLike | pd.DataFrame) -> str:
    h = hashlib.sha256()
    if isinstance(cells, pd.DataFrame):
        h.update(pd.util.hash_pandas_object(cells, index=False).to_numpy().tobytes())
    else:
        h.update(Path(cells).read_bytes())
    return h.hexdigest()


class VolumeSource(Source):
    """Offline source of the volume surrogate (module docstring). Its cell tables are the
    canonical CAVE ones (``allen_v1_column_types_slanted_ref`` then lists every cell of the
    volume); its synapse table is partitioned (:func:`ensure_tables`), and
    :meth:`fetch_synapses` concatenates it (small volumes only). Not MICrONS synapses."""

    kind = "volume"
    namespace = "volume"
    provenance = "generated"

    def __init__(self, cells: str | os.PathLike | pd.DataFrame, seed: int = 0, fraction: float = 1.0,
                 bounds: LayerBounds | None = None, partition_cells: int = PARTITION_CELLS,
                 chunk_rows: int = CHUNK_ROWS) -> None:
        self.seed = int(seed)
        self.bounds = bounds or LayerBounds()
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
        self.cells_input = cells
        self.cells_path = None if isinstance(cells, pd.DataFrame) else str(cells)
        if self.cells_path is not None and not Path(cells).is_file():
            raise SourceError(f"--cells {cells}: no such file")
        self.fraction = float(fraction)
        self.partition_cells = int(partition_cells)
        self.chunk_rows = int(chunk_rows)
        self.cells_sha256 = _digest_of(cells)
        key = hashlib.sha256(json.dumps([self.cells_sha256, self.fraction, list(self.bounds.bounds_um),
                                         GENERATOR_VERSION]).encode()).hexdigest()[:10]
        self.version = f"{self.seed}-{key}"

    @cached_property
    def cells(self) -> pd.DataFrame:
        return volume_cells(read_cell_table(self.cells_input), self.seed, self.fraction, self.bounds)

    @cached_property
    def sampler(self) -> SynapseSampler:
        return SynapseSampler.from_cells(self.cells, self.seed, partition_cells=self.partition_cells,
                                         chunk_rows=self.chunk_rows)

    def fetch_table(self, table: str, *, filter_in: Mapping[str, Sequence] | None = None,
                    progress: bool = True) -> pd.DataFrame:
        tables = cell_tables(self.cells)
        if table not in tables:
            raise SourceError(f"volume: no table {table!r}; it has {sorted(tables)} and {SYNAPSE_TABLE}")
        df = tables[table]
        if table == MTYPE_TABLE:
            df = df[df["cell_type"] != "none"]   # only the census inhibitory cells have one
        return conform(rows_in(df, filter_in), table, origin="volume")

    def fetch_synapses(self, root_ids: np.ndarray, *, parts=None, progress: bool = True) -> pd.DataFrame:
        s = pd.concat([self.sampler.partition(b) for b in range(self.sampler.n_partitions)], ignore_index=True)
        keep = np.isin(s["pre_pt_root_id"], root_ids) & np.isin(s["post_pt_root_id"], root_ids)
        return conform(s[keep], SYNAPSE_TABLE, origin="volume")

    def pull_tables(self, cache: TableCache, *, refresh: bool = False, progress: bool = True,
                    client=None) -> tuple[dict[str, pd.DataFrame], list[Path], bool]:
        """The cell tables and the partitioned synapse files (:func:`ensure_tables`; generated on
        ``client``'s Dask workers when given), and whether all were cached already."""
        try:
            cache.partition_files(SYNAPSE_TABLE, verify=False)     # ensure_tables verifies the checksums
            had_all = not refresh and all(cache.has(t) for t in COLUMN_TABLES if t != SYNAPSE_TABLE)
        except (CacheError, KeyError):
            had_all = False
        tables, files = ensure_tables(self, cache, client=client, refresh=refresh, progress=progress)
        return tables, files, had_all

    def describe(self) -> dict:
        return {
            "source": self.kind, "datastack": self.namespace, "version": self.version, "seed": self.seed,
            "fraction": self.fraction, "cells_table": self.cells_path or "DataFrame",
            "cells_sha256": self.cells_sha256, "generator_version": GENERATOR_VERSION,
            "note": "volume surrogate: cell-table somata + census-density inhibitory cells, synapses drawn "
                    "from V1DD pmax/sigma by distance; NOT MICrONS synapses",
        }
