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
    an inhibitory cell's depth is uniform in its layer's band; its lateral (x, z) position is that
    of a random excitatory cell of the same layer plus N(0, 20 um) jitter, so inhibitory cells
    follow the imaged volume's footprint. (The column census's fraction is applied to the
    volume; the m-type -> layer placement of the census is itself an assumption, see
    :mod:`connectomics.census`.) Inhibitory root ids start at :data:`INH_ROOT_ID_BASE`; all
    nucleus ids (:data:`NUCLEUS_ID_BASE` + rank by root id) and soma volumes are synthetic.

Synapses
    The column surrogate's rule (:mod:`connectomics.sources.surrogate`): pair (i, j), i != j, is
    connected with p = pmax[c_i, c_j] * exp(-r^2 / (2 sigma[e_i, e_j]^2)) (V1DD pmax by class,
    sigma by E/I, r the lateral x-z soma distance in the minnie65 frame), a connected pair gets
    1 + Poisson(lambda_pre) synapses of lognormal size placed N(0, 30 um) around the
    postsynaptic soma. Pre cells are processed in blocks (never an n x n matrix: one
    ``chunk_rows`` x n slab at a time), and **each pre cell draws from its own generator**
    ``SeedSequence([seed, 2, i])`` (i = node index, cells sorted by root id), so the synapse
    table depends only on the seed and the cells, not on block size or processing order.
    p is computed in float32 (exponent floored at -60) and drawn as ``u >= fl32(1 - p)`` with
    u a float32 uniform, which resolves p to 2^-24 (about 6e-8) by rounding: pairs whose p is
    below about 3e-8 (far apart) are never connected. Synapse ids are ``(i + 1) * 2**24 + k``
    (k-th synapse of pre cell i).

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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from . import census
from .atomic_io import sha256_of
from .cache import CacheError, TableCache, partition_key, write_partition_file
from .cell_types import check_labels, ei_class
from .layers import LayerBounds, frame_um_to_nm, nm_to_frame_um
from .positions import NM, VOXEL_NM, has_position, position_nm
from .pull import pull_column_tables
from .schema import COLUMN_TABLES, MTYPE_TABLE, SYNAPSE_TABLE, SchemaError, conform, empty
from .sources.base import SourceError
from .sources.surrogate import SurrogateSource, _layer_bands

#: bump when the sampling changes: it is part of the cache version
GENERATOR_VERSION = 1
CENSUS_EXCITATORY = sum(n for _, t, _, n in census.CENSUS if ei_class(t) == "E")   # 1,188
CENSUS_INHIBITORY = sum(n for _, t, _, n in census.CENSUS if ei_class(t) == "I")   # 163
INH_ROOT_ID_BASE = 864691190000000000
NUCLEUS_ID_BASE = 10_000_000
LATERAL_JITTER_UM = 20.0
SYNAPSE_SCATTER_UM = 30.0
#: pre cells per partition file, and per (chunk_rows x n) slab inside one
PARTITION_CELLS = 512
CHUNK_ROWS = 32
EXPONENT_FLOOR = -60.0
PART_FOLDER = SYNAPSE_TABLE
_STREAM_CELLS, _STREAM_SUBSET, _STREAM_SYNAPSES = 0, 1, 2


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
    bands = _layer_bands(bounds)
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
    bands = _layer_bands(bounds)
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
# synapses
# ------------------------------------------------------------------------------------------------
@dataclass
class SynapseSampler:
    """Draws the synapses of blocks of pre cells (everything a Dask worker needs: small arrays).

    ``partition(b)`` is the ``synapses_pni_2`` table of pre cells ``b*partition_cells ...``;
    it depends only on ``seed`` and the cells (see the module docstring).
    """

    seed: int
    root_ids: np.ndarray          # (n,) int64, node order
    frame_um: np.ndarray          # (n, 3) float64, minnie65 frame (x, depth, z)
    pmax_class: np.ndarray        # (n,) int codes into census.PMAX_CLASSES
    is_e: np.ndarray              # (n,) bool
    partition_cells: int = PARTITION_CELLS
    chunk_rows: int = CHUNK_ROWS
    _lat: np.ndarray = field(init=False, repr=False)
    _pmax_post: np.ndarray = field(init=False, repr=False)
    _neg_inv_post: np.ndarray = field(init=False, repr=False)

    @classmethod
    def from_cells(cls, cells: pd.DataFrame, seed: int, **kw) -> "SynapseSampler":
        return cls(
            seed=int(seed), root_ids=cells["root_id"].to_numpy(np.int64),
            frame_um=cells[["fx_um", "fy_um", "fz_um"]].to_numpy(float),
            pmax_class=pd.Categorical(cells["pmax_class"], categories=census.PMAX_CLASSES).codes.astype(np.int64),
            is_e=(cells["ei"] == "E").to_numpy(), **kw)

    def __post_init__(self) -> None:
        if (self.pmax_class < 0).any():
            raise ValueError("a cell has no pmax class")
        self._lat = np.ascontiguousarray(self.frame_um[:, [0, 2]], dtype=np.float32)
        # pmax of every pre class onto each post cell: (n_classes, n)
        self._pmax_post = census.PMAX.to_numpy()[:, self.pmax_class].astype(np.float32)
        s = census.SIGMA_UM
        # -1 / (2 sigma^2) of an E (row 0) or I (row 1) pre cell onto each post cell: (2, n)
        inv = np.array([[s["E"]["E"], s["E"]["I"]], [s["I"]["E"], s["I"]["I"]]]) ** -2 / -2.0
        self._neg_inv_post = inv[:, np.where(self.is_e, 0, 1)].astype(np.float32)
        lam = census.SYNAPSES_PER_CONNECTION_EXTRA_MEAN
        self._lam = np.where(self.is_e, lam["E"], lam["I"])

    @property
    def n(self) -> int:
        return len(self.root_ids)

    @property
    def n_partitions(self) -> int:
        return max(1, -(-self.n // self.partition_cells))

    def rows_of(self, b: int) -> range:
        return range(b * self.partition_cells, min(self.n, (b + 1) * self.partition_cells))

    def pair_probability(self, rows: np.ndarray) -> np.ndarray:
        """p of pre cells ``rows`` onto every cell, (len(rows), n) float32 (diagonal 0)."""
        rows = np.asarray(rows, dtype=np.int64)
        lat = self._lat
        dx = lat[rows, 0, None] - lat[None, :, 0]
        dz = lat[rows, 1, None] - lat[None, :, 1]
        dx *= dx
        dz *= dz
        dx += dz                                          # r^2
        dx *= self._neg_inv_post[np.where(self.is_e[rows], 0, 1)]
        np.maximum(dx, EXPONENT_FLOOR, out=dx)
        np.exp(dx, out=dx)
        dx *= self._pmax_post[self.pmax_class[rows]]
        dx[np.arange(len(rows)), rows] = 0.0
        return dx

    def generator(self, i: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _STREAM_SYNAPSES, int(i)])))

    def partition(self, b: int) -> pd.DataFrame:
        """The synapses of partition ``b`` in the ``synapses_pni_2`` schema, sorted by id."""
        rows = self.rows_of(b)
        u = np.empty((min(self.chunk_rows, len(rows)), self.n), dtype=np.float32)
        mu, sd = census.SYNAPSE_SIZE_LOGNORMAL
        out_pre, out_post, out_id, out_size, out_noise = [], [], [], [], []
        for c0 in range(rows.start, rows.stop, self.chunk_rows):
            chunk = np.arange(c0, min(rows.stop, c0 + self.chunk_rows))
            q = self.pair_probability(chunk)
            np.subtract(np.float32(1.0), q, out=q)        # connect iff u >= fl32(1 - p)
            gens = [self.generator(i) for i in chunk]
            for k, g in enumerate(gens):
                g.random(out=u[k], dtype=np.float32)
            hit = u[: len(chunk)] >= q
            for k, (i, g) in enumerate(zip(chunk, gens)):
                post = np.flatnonzero(hit[k])
                nsyn = 1 + g.poisson(self._lam[i], size=len(post))
                m = int(nsyn.sum())
                out_pre.append(np.full(m, i, dtype=np.int64))
                out_post.append(np.repeat(post, nsyn))
                out_id.append((np.int64(i) + 1) * (1 << 24) + np.arange(m, dtype=np.int64))
                out_size.append(g.lognormal(mu, sd, size=m))
                out_noise.append(g.normal(0.0, SYNAPSE_SCATTER_UM, size=(m, 3)))
        if not out_pre:
            return empty(SYNAPSE_TABLE)
        pre, post = np.concatenate(out_pre), np.concatenate(out_post)
        size = np.maximum(1, np.rint(np.concatenate(out_size))).astype(np.int64)
        ctr = frame_um_to_nm(self.frame_um[post] + np.concatenate(out_noise)) if len(post) else np.zeros((0, 3))
        return pd.DataFrame({
            "id": np.concatenate(out_id), "pre_pt_root_id": self.root_ids[pre],
            "post_pt_root_id": self.root_ids[post], "size": size,
            "ctr_pt_position_x": ctr[:, 0], "ctr_pt_position_y": ctr[:, 1], "ctr_pt_position_z": ctr[:, 2],
        })


# ------------------------------------------------------------------------------------------------
# partitions in the cache
# ------------------------------------------------------------------------------------------------
def part_key(b: int) -> str:
    return partition_key(SYNAPSE_TABLE, b)


def part_path(cache: TableCache, b: int) -> Path:
    return cache.partition_path(SYNAPSE_TABLE, b)


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
        e = m.get(part_key(b))
        p = part_path(cache, b)
        rows = sampler.rows_of(b)
        if e is None or not p.exists() or e.get("pre_cells") != [rows.start, rows.stop]:
            continue
        if verify and sha256_of(p) != e["sha256"]:
            continue
        done[b] = e
    return done


def drop_partitions(cache: TableCache) -> None:
    """Remove the partitioned synapse table (files and manifest entries)."""
    cache.drop_partitions(SYNAPSE_TABLE)


def partition_files(cache: TableCache, verify: bool = True) -> list[Path]:
    """Paths of the complete partitioned synapse table, checked against the manifest."""
    return cache.partition_files(SYNAPSE_TABLE, verify=verify)


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
        pending[part_key(b)] = {**entry, "source": source.kind, "query": source.describe()}
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
        files = partition_files(cache)
        entry = cache.manifest()[SYNAPSE_TABLE]
        if entry["query"].get("partition_cells") != source.partition_cells:   # other blocks: redo
            drop_partitions(cache)
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


class VolumeSource(SurrogateSource):
    """Offline source of the volume surrogate (module docstring). Its cell tables are the
    canonical CAVE ones (``allen_v1_column_types_slanted_ref`` then lists every cell of the
    volume); its synapse table is partitioned (:func:`ensure_tables`), and
    :meth:`fetch_synapses` concatenates it (small volumes only). Not MICrONS synapses."""

    kind = "volume"
    namespace = "volume"

    def __init__(self, cells: str | os.PathLike | pd.DataFrame, seed: int = 0, fraction: float = 1.0,
                 bounds: LayerBounds | None = None, partition_cells: int = PARTITION_CELLS,
                 chunk_rows: int = CHUNK_ROWS) -> None:
        super().__init__(seed=seed, bounds=bounds)
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
    def column(self) -> SimpleNamespace:  # the surrogate's table builders read ``column.cells``
        return SimpleNamespace(cells=self.cells)

    @cached_property
    def sampler(self) -> SynapseSampler:
        return SynapseSampler.from_cells(self.cells, self.seed, partition_cells=self.partition_cells,
                                         chunk_rows=self.chunk_rows)

    def _tables(self) -> dict[str, pd.DataFrame]:
        tables = super()._tables()
        mt = tables[MTYPE_TABLE]
        tables[MTYPE_TABLE] = mt[mt["cell_type"] != "none"]   # only the census inhibitory cells have one
        return tables

    def fetch_synapses(self, root_ids: np.ndarray, *, parts=None, progress: bool = True) -> pd.DataFrame:
        s = pd.concat([self.sampler.partition(b) for b in range(self.sampler.n_partitions)], ignore_index=True)
        keep = np.isin(s["pre_pt_root_id"], root_ids) & np.isin(s["post_pt_root_id"], root_ids)
        return conform(s[keep], SYNAPSE_TABLE, origin="volume")

    def pull_tables(self, cache: TableCache, *, refresh: bool = False, progress: bool = True,
                    client=None) -> tuple[dict[str, pd.DataFrame], list[Path], bool]:
        """The cell tables and the partitioned synapse files (:func:`ensure_tables`; generated on
        ``client``'s Dask workers when given), and whether all were cached already."""
        try:
            partition_files(cache, verify=False)     # ensure_tables verifies the checksums
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
