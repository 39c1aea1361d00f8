"""Any population of any datastack: a :class:`PopulationQuery` and the CAVE source that pulls it.

A query names a cell table (default: the datastack profile's ``cell_types`` table, for
minnie65 the AIBS metamodel table of the pinned version), filters on its columns (cell types,
classification systems, any other column), m-types (the profile's m-type table), a proofreading
filter (the profile's status table: a compartment's ``status_<c>`` true, or its
``strategy_<c>`` one of the accepted values), a box in nm, a depth range and a radius around a
point in the datastack's standard-transform frame (um; depth = y, the radius is taken in the
x-z plane: a vertical cylinder), and a seeded random ``limit``. It is saved as a small JSON file
(:meth:`PopulationQuery.save`), and its :meth:`~PopulationQuery.key` names the cache folder.

:class:`PopulationSource` resolves the query before it writes anything: the server's versions
and tables are checked against the profile, the filter columns against the cell table's columns
(one row asked for), then the table's rows are pulled (type filters applied by the server, the
rest here by :func:`select_population`). A query that selects no cell, a box or depth range outside
the volume its table spans, a filter on a column the table lacks, an unknown profile or version:
one :class:`QueryError` naming the field and the table, and nothing in the cache.

Synapses onto the population are pulled in post-synaptic batches straight into a partitioned
Parquet table in the cache (one part per batch, each recorded in the manifest with the pull's
fingerprint), so memory holds one batch at a time and an interrupted pull resumes at the first
batch not recorded. ``outside_inputs="drop"`` asks for presynaptic ids in the population only;
``"counts"`` asks for every input and keeps those from outside the population as counts per
postsynaptic cell and presynaptic type (``unknown``: a presynaptic segment no row of the cell
table names) in the table ``outside_inputs``, so a cell's inhibition is not truncated by the
selection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..atomic_io import write_json_atomic
from ..cache import CacheError, TableCache, partition_key, write_partition_file
from ..profiles import DatastackProfile, ProfileError, load_profile
from ..schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, MTYPE_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE, conform, empty,
)
from .base import SourceError
from .cave import CaveSource, _canonical_synapses

logger = logging.getLogger(__name__)

#: Cache names of the tables a population pull writes (the files' schemas are canonical).
POPULATION = "population"
POPULATION_MTYPES = "population_mtypes"
POPULATION_PROOFREADING = "population_proofreading"
OUTSIDE_INPUTS = "outside_inputs"
OUTSIDE_MODES = ("drop", "counts")
COMPARTMENTS = ("axon", "dendrite")
#: presynaptic type of a segment the cell table does not name (no soma, a fragment)
UNKNOWN_PRE = "unknown"


class QueryError(SourceError):
    """A population query that cannot be answered: names the field and the table."""


def _tuple(values: Any, name: str) -> tuple:
    if values is None:
        return ()
    if isinstance(values, str):
        return tuple(v.strip() for v in values.split(",") if v.strip())
    try:
        return tuple(values)
    except TypeError:
        raise QueryError(f"population query: {name} must be a list, got {values!r}") from None


@dataclass(frozen=True)
class PopulationQuery:
    """Which cells of a datastack form the graph (module docstring). Lengths in nm, depths and
    radii in um of the standard-transform frame; ``bbox_nm`` is ``((x0, y0, z0), (x1, y1, z1))``,
    each axis ``[lo, hi)``; ``depth_um`` ``(top, bottom)`` ``[top, bottom)``; ``center_um`` the
    frame's ``(x, z)`` of the ``radius_um`` cylinder."""

    datastack: str = "minnie65_public"
    version: int | None = None
    cell_table: str | None = None
    cell_types: tuple[str, ...] = ()
    classification_systems: tuple[str, ...] = ()
    mtypes: tuple[str, ...] = ()
    filters: dict[str, tuple] = field(default_factory=dict)
    proofread: dict[str, tuple[str, ...]] = field(default_factory=dict)
    bbox_nm: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    depth_um: tuple[float, float] | None = None
    radius_um: float | None = None
    center_um: tuple[float, float] | None = None
    limit: int | None = None
    seed: int = 0
    outside_inputs: str = "drop"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        for name in ("cell_types", "classification_systems", "mtypes"):
            set_(name, _tuple(getattr(self, name), name))
        if not isinstance(self.filters, Mapping):
            raise QueryError(f"population query: filters must map a column to its values, got {self.filters!r}")
        set_("filters", {str(k): _tuple(v, f"filters[{k!r}]") for k, v in self.filters.items()})
        if isinstance(self.proofread, (str, list, tuple)):
            set_("proofread", {c: () for c in _tuple(self.proofread, "proofread")})
        set_("proofread", {str(k): _tuple(v, f"proofread[{k!r}]") for k, v in dict(self.proofread).items()})
        for c in self.proofread:
            if c not in COMPARTMENTS:
                raise QueryError(f"population query: proofread compartment {c!r}; use axon or dendrite")
        if self.bbox_nm is not None:
            box = np.asarray(self.bbox_nm, dtype=float)
            if box.shape != (2, 3) or not np.isfinite(box).all():
                raise QueryError(f"population query: bbox_nm must be two (x, y, z) corners in nm, got {self.bbox_nm!r}")
            if not (box[0] < box[1]).all():
                raise QueryError(f"population query: bbox_nm's first corner must be below its second on "
                                 f"every axis, got {box.tolist()}")
            set_("bbox_nm", tuple(tuple(float(v) for v in row) for row in box))
        if self.depth_um is not None:
            d = tuple(float(v) for v in self.depth_um)
            if len(d) != 2 or not d[0] < d[1]:
                raise QueryError(f"population query: depth_um must be (top, bottom) with top < bottom, got {self.depth_um!r}")
            set_("depth_um", d)
        if (self.radius_um is None) != (self.center_um is None):
            raise QueryError("population query: radius_um and center_um go together (a cylinder around the "
                             "frame point (x, z))")
        if self.radius_um is not None:
            if not float(self.radius_um) > 0:
                raise QueryError(f"population query: radius_um must be > 0, got {self.radius_um!r}")
            c = tuple(float(v) for v in self.center_um)
            if len(c) != 2:
                raise QueryError(f"population query: center_um must be (x, z) in um, got {self.center_um!r}")
            set_("radius_um", float(self.radius_um))
            set_("center_um", c)
        if self.limit is not None and (int(self.limit) != self.limit or int(self.limit) < 1):
            raise QueryError(f"population query: limit must be a positive integer, got {self.limit!r}")
        if self.outside_inputs not in OUTSIDE_MODES:
            raise QueryError(f"population query: outside_inputs {self.outside_inputs!r}; use "
                             f"{' or '.join(OUTSIDE_MODES)}")
        if self.version is not None:
            set_("version", int(self.version))

    # -- files and identity -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON types, every field (what files, the manifest and meta.json hold)."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        d["filters"] = {k: list(v) for k, v in self.filters.items()}
        d["proofread"] = {k: list(v) for k, v in self.proofread.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping, *, origin: str = "population query") -> "PopulationQuery":
        if not isinstance(data, Mapping):
            raise QueryError(f"{origin}: a query is a JSON object of fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise QueryError(f"{origin}: unknown field(s) {unknown}; fields: {', '.join(sorted(names))}")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as e:
            raise QueryError(f"{origin}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write the query as JSON (atomically)."""
        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PopulationQuery":
        """A query saved by :meth:`save`; a missing or malformed file is a :class:`QueryError`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise QueryError(f"{path}: cannot read the query file ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise QueryError(f"{path}: not JSON ({e})") from None
        return cls.from_dict(data, origin=str(path))

    def resolved(self, profile: DatastackProfile) -> "PopulationQuery":
        """This query with the profile's defaults filled in (version, cell table)."""
        return dataclasses.replace(self, version=self.version or profile.default_version,
                                   cell_table=self.cell_table or profile.table("cell_types"))

    def key(self) -> str:
        """10 hex digits naming the query (its fields, sorted JSON): the cache folder's suffix."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------------
# selection (pure pandas on canonical rows)
# ------------------------------------------------------------------------------------------------
def unique_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Rows of a cell table that name one cell: a root id of 0 (a nucleus with no segment) and
    root ids on several rows (merged cells) are left out."""
    cells = cells[cells["pt_root_id"] != 0]
    return cells[~cells["pt_root_id"].duplicated(keep=False)]


def spatial_mask(cells: pd.DataFrame, query: PopulationQuery, profile: DatastackProfile) -> np.ndarray:
    """(n,) bool: the rows inside the query's box, depth range and cylinder."""
    pos = cells[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(float)
    keep = np.ones(len(cells), dtype=bool)
    if query.bbox_nm is not None:
        lo, hi = np.asarray(query.bbox_nm)
        keep &= ((pos >= lo) & (pos < hi)).all(axis=1)
    if query.depth_um is not None or query.radius_um is not None:
        frame = profile.frame_um(pos)
        if query.depth_um is not None:
            keep &= (frame[:, 1] >= query.depth_um[0]) & (frame[:, 1] < query.depth_um[1])
        if query.radius_um is not None:
            cx, cz = query.center_um
            keep &= np.hypot(frame[:, 0] - cx, frame[:, 2] - cz) <= query.radius_um
    return keep


def proofread_mask(cells: pd.DataFrame, proof: pd.DataFrame, query: PopulationQuery) -> np.ndarray:
    """(n,) bool: the rows whose root id the proofreading table accepts for every compartment
    the query names (status true, or strategy one of the accepted values)."""
    keep = np.ones(len(cells), dtype=bool)
    for comp, accepted in query.proofread.items():
        if accepted:
            ok = proof[f"strategy_{comp}"].isin(list(accepted))
        else:
            ok = proof[f"status_{comp}"].fillna(False).astype(bool)
        keep &= cells["pt_root_id"].isin(proof.loc[ok.to_numpy(), "pt_root_id"]).to_numpy()
    return keep


def limit_rows(cells: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A seeded random ``limit`` of ``cells`` (all if fewer), drawn from the rows in root-id
    order so the server's row order does not change the draw; sorted by root id."""
    cells = cells.sort_values("pt_root_id", kind="stable").reset_index(drop=True)
    if limit is None or limit >= len(cells):
        return cells
    pick = np.sort(np.random.default_rng(seed).choice(len(cells), size=int(limit), replace=False))
    return cells.iloc[pick].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# the source
# ------------------------------------------------------------------------------------------------
class PopulationSource(CaveSource):
    """The ``cave`` source pulling the cells a :class:`PopulationQuery` selects (module docstring).
    Other arguments as :class:`~connectomics.sources.cave.CaveSource`; ``datastack`` and
    ``version`` come from the query (the profile's default version if it names none)."""

    def __init__(self, query: PopulationQuery, **kwargs: Any) -> None:
        try:
            profile = load_profile(query.datastack)
        except ProfileError as e:
            raise QueryError(str(e)) from None
        self.profile = profile
        self.query = query.resolved(profile)
        super().__init__(self.query.datastack, self.query.version, **kwargs)
        self.synapse_table = profile.table("synapses")
        self._population: dict[str, Any] = {}
        self._outside: dict[str, Any] = {}

    # -- identity ---------------------------------------------------------------------------------
    @property
    def cache_version(self) -> str:
        return f"{self.version}-q{self.query.key()}"

    def describe(self) -> dict:
        """Source, datastack, version, server, profile, the query and (once pulled) the resolved
        root ids and the outside-input table (never the token)."""
        out = {**super().describe(), "profile": self.profile.to_dict(), "query": self.query.to_dict(),
               "query_key": self.query.key()}
        if self._population:
            out["population"] = dict(self._population)
        if self._outside:
            out["outside_inputs"] = dict(self._outside)
        return out

    def __repr__(self) -> str:
        return f"PopulationSource(datastack={self.namespace!r}, version={self.version}, query={self.query.key()})"

    # -- server checks ------------------------------------------------------------------------------
    def _check_server(self) -> None:
        """The version on the server and every table the query needs there, else QueryError."""
        mat = self._materialize()
        versions = self._call(f"{self.namespace}: versions", lambda: mat.get_versions())
        if self.version not in [int(v) for v in versions]:
            raise QueryError(f"population query: version {self.version}: datastack {self.namespace!r} has no "
                             f"materialization version {self.version} (the server has: "
                             f"{', '.join(str(v) for v in sorted(versions))})")
        tables = set(self._call(f"{self.namespace} v{self.version}: tables",
                                lambda: mat.get_tables(version=self.version)))
        needed = {"cell_table": self.query.cell_table, "synapses": self.synapse_table}
        if self.query.mtypes or "mtypes" in self.profile.tables:
            needed["mtypes"] = self.profile.table("mtypes") if self.query.mtypes else self.profile.tables["mtypes"]
        if self.query.proofread:
            needed["proofreading"] = self.profile.table("proofreading")
        for role, table in needed.items():
            if table not in tables:
                raise QueryError(f"datastack profile {self.profile.name!r}: {role} table {table!r} is not on "
                                 f"the server at version {self.version}")

    def _columns(self, table: str) -> list[str]:
        """The columns of ``table`` as the server answers them (one row asked for)."""
        mat = self._materialize()
        df = self._call(f"{table} (columns)", lambda: mat.query_table(
            table, limit=1, split_positions=True, desired_resolution=[1, 1, 1],
            materialization_version=self.version, metadata=False))
        return list(df.columns)

    def _check_vocabulary(self) -> None:
        q, p = self.query, self.profile
        bad = [t for t in q.cell_types if p.cell_types and t not in p.cell_types]
        if bad:
            raise QueryError(f"population query: cell_types {bad} are not labels of table {q.cell_table!r} "
                             f"(profile {p.name!r}: {', '.join(p.cell_types)})")
        if q.mtypes and "mtypes" not in p.tables:
            raise QueryError(f"population query: mtypes: datastack profile {p.name!r} names no m-type table")
        bad = [t for t in q.mtypes if p.mtypes and t not in p.mtypes]
        if bad:
            raise QueryError(f"population query: mtypes {bad} are not m-types of profile {p.name!r}")
        for comp, accepted in q.proofread.items():
            known = getattr(p, f"{comp}_strategies")
            bad = [a for a in accepted if known and a not in known]
            if bad:
                raise QueryError(f"population query: proofread {comp} values {bad} are not strategies of table "
                                 f"{p.tables.get('proofreading')!r} (known: {', '.join(known)})")

    # -- resolving the population ---------------------------------------------------------------------
    def resolve(self, progress: bool = False) -> dict[str, pd.DataFrame]:
        """The population's tables, read from the server (nothing is written): ``population``
        (cell-type schema, one row per selected cell, by root id), its m-types and proofreading
        rows, and ``funnel`` (how many cells each step kept)."""
        q, table = self.query, self.query.cell_table
        self._check_vocabulary()
        self._check_server()
        columns = self._columns(table)
        server_filters = {"cell_type": q.cell_types, "classification_system": q.classification_systems,
                          **q.filters}
        for col, values in server_filters.items():
            if values and col not in columns:
                field_name = {"cell_type": "cell_types", "classification_system": "classification_systems"}.get(
                    col, f"filters[{col!r}]")
                raise QueryError(f"population query: {field_name}: table {table!r} has no column {col!r} "
                                 f"(its columns: {', '.join(columns)})")
        flt = {c: list(v) for c, v in server_filters.items() if v}
        rows = self.fetch_rows(table, CELL_TYPE_TABLE, filter_in=flt or None, progress=progress)
        funnel = {"table_rows": int(len(rows))}
        if not len(rows):
            raise QueryError(f"population query selects no cells: no row of table {table!r} has "
                             + ", ".join(f"{c} in {list(v)}" for c, v in flt.items()))
        cells = unique_cells(rows)
        funnel["one_cell_per_root"] = int(len(cells))
        self._check_in_volume(cells, table)
        cells = cells[spatial_mask(cells, q, self.profile)]
        funnel["in_space"] = int(len(cells))
        mtypes = empty(MTYPE_TABLE)
        if "mtypes" in self.profile.tables and len(cells):
            mtypes = self.fetch_rows(self.profile.tables["mtypes"], MTYPE_TABLE,
                                     filter_in={"target_id": cells["target_id"].tolist()}, progress=progress)
            mtypes = mtypes[~mtypes["target_id"].duplicated(keep=False)]
            if q.mtypes:
                cells = cells[cells["target_id"].isin(mtypes.loc[mtypes["cell_type"].isin(q.mtypes), "target_id"])]
                funnel["mtypes"] = int(len(cells))
        proof = empty(PROOFREADING_TABLE)
        if q.proofread and len(cells):
            proof = self.fetch_rows(self.profile.table("proofreading"), PROOFREADING_TABLE,
                                    filter_in={"pt_root_id": cells["pt_root_id"].tolist()}, progress=progress)
            cells = cells[proofread_mask(cells, proof, q)]
            funnel["proofread"] = int(len(cells))
        cells = limit_rows(cells, q.limit, q.seed)
        funnel["selected"] = int(len(cells))
        if not len(cells):
            raise QueryError(f"population query selects no cells of table {table!r}: "
                             + ", ".join(f"{k} {v}" for k, v in funnel.items()))
        bad = [t for t in cells["cell_type"].unique() if self.profile.cell_types and t not in self.profile.cell_types]
        if bad:
            raise QueryError(f"table {table!r}: cell_type label(s) {sorted(bad)} are not in datastack profile "
                             f"{self.profile.name!r}'s vocabulary ({', '.join(self.profile.cell_types)})")
        cells = conform(cells, COLUMN_TABLE, origin=f"population of {table}")
        mtypes = mtypes[mtypes["target_id"].isin(cells["target_id"])].reset_index(drop=True)
        proof = proof[proof["pt_root_id"].isin(cells["pt_root_id"])].reset_index(drop=True)
        return {POPULATION: cells, POPULATION_MTYPES: mtypes, POPULATION_PROOFREADING: proof,
                "funnel": funnel}

    def _check_in_volume(self, cells: pd.DataFrame, table: str) -> None:
        """A box or depth range that misses everything the table spans is an error naming it."""
        q = self.query
        pos = cells[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(float)
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        if q.bbox_nm is not None:
            blo, bhi = np.asarray(q.bbox_nm)
            if ((bhi <= lo) | (blo > hi)).any():
                span = ", ".join(f"{a} {lo[i]:.0f}..{hi[i]:.0f}" for i, a in enumerate("xyz"))
                raise QueryError(f"population query: bbox_nm {np.asarray(q.bbox_nm).tolist()} lies outside the "
                                 f"volume: the {len(cells)} cells of table {table!r} span {span} nm")
        if q.depth_um is not None:
            depth = self.profile.frame_um(pos)[:, 1]
            if q.depth_um[1] <= depth.min() or q.depth_um[0] > depth.max():
                raise QueryError(f"population query: depth_um {list(q.depth_um)} lies outside the volume: the "
                                 f"{len(cells)} cells of table {table!r} lie {depth.min():.0f}..{depth.max():.0f} um "
                                 "below the pia")

    # -- the build's tables ---------------------------------------------------------------------------
    def pull_tables(self, cache: TableCache, *, refresh: bool = False, progress: bool = True,
                    client: Any = None) -> tuple[dict[str, pd.DataFrame], list[Path], bool]:
        """The population's cell tables (under the keys :func:`connectomics.cells.assemble_cells`
        reads), the synapse partitions, and whether all was cached; resolved and pulled where
        missing. Nothing is written before the population is resolved."""
        if refresh:
            cache.reset()
        manifest = cache.manifest()
        had_all = (all(cache.has(t) for t in (POPULATION, POPULATION_MTYPES, POPULATION_PROOFREADING))
                   and manifest.get(SYNAPSE_TABLE, {}).get("partitioned", False)
                   and (self.query.outside_inputs == "drop" or cache.has(OUTSIDE_INPUTS)))
        if cache.has(POPULATION):
            pop = cache.read(POPULATION)
            mtypes, proof = cache.read(POPULATION_MTYPES), cache.read(POPULATION_PROOFREADING)
            funnel = manifest[POPULATION]["query"].get("funnel", {})
        else:
            resolved = self.resolve(progress=progress)
            pop, mtypes, proof = (resolved[POPULATION], resolved[POPULATION_MTYPES],
                                  resolved[POPULATION_PROOFREADING])
            funnel = resolved["funnel"]
            record = {**self.describe(), "funnel": funnel, **_roots_record(pop["pt_root_id"])}
            cache.write(POPULATION_MTYPES, mtypes, source=self.kind, query=record)
            cache.write(POPULATION_PROOFREADING, proof, source=self.kind, query=record)
            cache.write(POPULATION, pop, source=self.kind, query=record)   # last: marks the three done
        roots = np.sort(pop["pt_root_id"].to_numpy(np.int64))
        self._population = {"funnel": funnel, **_roots_record(roots), "root_ids": roots.tolist()}
        files = self.pull_synapses(cache, roots, progress=progress)
        tables = {COLUMN_TABLE: pop, MTYPE_TABLE: mtypes, PROOFREADING_TABLE: proof}
        return tables, files, had_all

    def adjust_nodes(self, nodes: pd.DataFrame, bounds: Any) -> pd.DataFrame:
        """Depths in this datastack's own standard-transform frame (the build computes minnie65's)."""
        if self.profile.transform == "minnie65":
            return nodes
        depth = self.profile.frame_um(nodes[["x_nm", "y_nm", "z_nm"]].to_numpy(float))[:, 1]
        return nodes.assign(depth_um=depth, layer=bounds.assign(depth))

    #: labels are checked against the profile's vocabulary (resolve), not MICrONS' column labels
    own_vocabulary = True

    # -- synapses -------------------------------------------------------------------------------------
    def _fingerprint(self, roots: np.ndarray) -> str:
        h = hashlib.sha256(f"{self.namespace}|{self.version}|{self.synapse_table}|{self.batch_size}|"
                           f"{self.query.outside_inputs}|".encode())
        h.update(roots.astype("<i8").tobytes())
        return h.hexdigest()[:16]

    def pull_synapses(self, cache: TableCache, roots: np.ndarray, *, progress: bool = True) -> list[Path]:
        """Synapses onto ``roots`` (sorted, unique) as the partitioned table ``synapses_pni_2`` of
        ``cache`` (canonical schema, presynaptic ids in ``roots``), one part per batch of
        ``batch_size`` postsynaptic ids; finished parts of the same pull are kept, others redone.
        With ``outside_inputs="counts"`` also the table ``outside_inputs``. Returns the part files."""
        fp = self._fingerprint(roots)
        manifest = cache.manifest()
        entry = manifest.get(SYNAPSE_TABLE)
        if entry and entry.get("partitioned") and entry.get("query", {}).get("fingerprint") == fp and (
                self.query.outside_inputs == "drop" or cache.has(OUTSIDE_INPUTS)):
            self._outside = manifest.get(OUTSIDE_INPUTS, {}).get("query", {}).get("summary", {})
            return cache.partition_files(SYNAPSE_TABLE)
        if entry and not entry.get("partitioned"):
            raise CacheError(f"{cache.path(SYNAPSE_TABLE)}: not a partitioned synapse table; run with --refresh")
        counts = self.query.outside_inputs == "counts"
        type_of = self._pre_types(roots, progress) if counts else None
        batches = [roots[i:i + self.batch_size] for i in range(0, len(roots), self.batch_size)]
        entries: list[dict] = []
        for b, post in enumerate(tqdm(batches, desc=self.synapse_table, unit="batch", disable=not progress)):
            key = partition_key(SYNAPSE_TABLE, b)
            done = manifest.get(key)
            if done and done.get("fingerprint") == fp and (cache.dir / done["file"]).exists():
                entries.append(done)
                continue
            what = f"synapses onto batch {b + 1}/{len(batches)}"
            batch = _canonical_synapses(self._synapses_onto(post.tolist(), None if counts else roots.tolist(), what))
            batch = batch.sort_values("id", kind="stable").reset_index(drop=True)
            if counts:
                inside = batch["pre_pt_root_id"].isin(roots).to_numpy()
                outside = _outside_counts(batch[~inside], type_of)
                out_entry = write_partition_file(cache.dir, OUTSIDE_INPUTS, b, outside, fingerprint=fp, batch=b)
                cache.update_manifest({partition_key(OUTSIDE_INPUTS, b): out_entry})
                batch = batch[inside].reset_index(drop=True)
            e = write_partition_file(cache.dir, SYNAPSE_TABLE, b, batch, fingerprint=fp, batch=b)
            cache.update_manifest({key: e})   # after its outside part: a recorded batch is whole
            entries.append(e)
        query = {**{k: v for k, v in self.describe().items() if k != "population"}, "fingerprint": fp,
                 "post_ids": "population root ids", "pre_ids": "population root ids" if not counts else "any",
                 **_roots_record(roots)}
        if counts:
            self._finish_outside(cache, len(batches), query)
        cache.record_partitioned(SYNAPSE_TABLE, entries, source=self.kind, query=query)
        return cache.partition_files(SYNAPSE_TABLE)

    def _synapses_onto(self, post: list[int], pre: list[int] | None, what: str) -> list[pd.DataFrame]:
        """Synapses onto ``post`` from ``pre`` (None: from anywhere), raw columns, split while the
        server caps them (postsynaptic ids halved first, then presynaptic ones)."""
        mat = self._materialize()
        df, capped = self._query(f"{what} ({len(post)} post x {'any' if pre is None else len(pre)} pre ids)",
                                 lambda: mat.synapse_query(
                                     pre_ids=pre, post_ids=post, split_positions=True, desired_resolution=[1, 1, 1],
                                     materialization_version=self.version, synapse_table=self.synapse_table,
                                     remove_autapses=False, metadata=False))
        if not capped:
            return [df]
        if len(post) > 1:
            h = len(post) // 2
            return self._synapses_onto(post[:h], pre, what) + self._synapses_onto(post[h:], pre, what)
        if pre is not None and len(pre) > 1:
            h = len(pre) // 2
            return self._synapses_onto(post, pre[:h], what) + self._synapses_onto(post, pre[h:], what)
        raise SourceError(f"{what}: the inputs of root {post[0]} alone reach the server's row cap "
                          f"({self.row_limit}); cannot split further")

    def _pre_types(self, roots: np.ndarray, progress: bool) -> pd.Series:
        """Cell type by root id over the whole cell table (the presynaptic types of outside inputs)."""
        rows = unique_cells(self.fetch_rows(self.query.cell_table, CELL_TYPE_TABLE, progress=progress))
        return pd.Series(rows["cell_type"].to_numpy(object), index=rows["pt_root_id"].to_numpy(np.int64))

    def _finish_outside(self, cache: TableCache, n_batches: int, query: dict) -> None:
        """One ``outside_inputs`` table from its per-batch parts (small: cells x types)."""
        frames = [pd.read_parquet(cache.dir / f"{partition_key(OUTSIDE_INPUTS, b)}.parquet") for b in range(n_batches)]
        table = (pd.concat(frames, ignore_index=True) if frames else _outside_counts(empty(SYNAPSE_TABLE), None))
        table = table.sort_values(["post_pt_root_id", "pre_cell_type"], kind="stable").reset_index(drop=True)
        summary = {"mode": "counts", "rows": int(len(table)), "n_synapses": int(table["n_synapses"].sum()),
                   "by_pre_type": {str(k): int(v) for k, v in table.groupby("pre_cell_type")["n_synapses"].sum().items()}}
        path = cache.write(OUTSIDE_INPUTS, table, source=self.kind, query={**query, "summary": summary})
        summary.update({"file": str(path), "sha256": cache.manifest()[OUTSIDE_INPUTS]["sha256"]})
        self._outside = summary
        cache.update_manifest({OUTSIDE_INPUTS: {**cache.manifest()[OUTSIDE_INPUTS],
                                                "query": {**query, "summary": summary}}})
        cache.drop_partitions(OUTSIDE_INPUTS)


def _roots_record(roots: Sequence[int] | pd.Series | np.ndarray) -> dict:
    r = np.sort(np.asarray(roots, dtype=np.int64))
    return {"n_cells": int(r.size), "root_ids_sha256": hashlib.sha256(r.astype("<i8").tobytes()).hexdigest()}


def _outside_counts(synapses: pd.DataFrame, type_of: pd.Series | None) -> pd.DataFrame:
    """Synapses from outside the population -> one row per (postsynaptic cell, presynaptic type):
    ``post_pt_root_id, pre_cell_type, n_synapses, summed_size`` (size in voxels)."""
    pre_type = (synapses["pre_pt_root_id"].map(type_of) if type_of is not None and len(synapses)
                else pd.Series(index=synapses.index, dtype=object))
    frame = pd.DataFrame({"post_pt_root_id": synapses["post_pt_root_id"].to_numpy(np.int64),
                          "pre_cell_type": pre_type.fillna(UNKNOWN_PRE).astype(str).to_numpy(object),
                          "size": synapses["size"].to_numpy(float)})
    out = frame.groupby(["post_pt_root_id", "pre_cell_type"], sort=True).agg(
        n_synapses=("size", "size"), summed_size=("size", "sum")).reset_index()
    return out.astype({"post_pt_root_id": "int64", "pre_cell_type": object, "n_synapses": "int64",
                       "summed_size": "float64"})


def outside_inputs(graph: Any) -> pd.DataFrame:
    """The ``outside_inputs`` table a graph built with ``outside_inputs="counts"`` records in its
    meta (``post_pt_root_id, pre_cell_type, n_synapses, summed_size``), checksum checked."""
    from ..atomic_io import sha256_of

    info = graph.meta.get("outside_inputs")
    if not info or "file" not in info:
        raise CacheError("this graph was built without outside inputs (outside_inputs='counts')")
    path = Path(info["file"])
    if not path.exists() or sha256_of(path) != info["sha256"]:
        raise CacheError(f"{path}: missing or changed since the graph was built; rebuild it")
    return pd.read_parquet(path)


__all__ = ["OUTSIDE_INPUTS", "POPULATION", "PopulationQuery", "PopulationSource", "QueryError", "limit_rows",
           "outside_inputs", "proofread_mask", "spatial_mask", "unique_cells"]
