"""A fake CAVE materialization server for population queries, on any datastack profile.

Rows are shaped like the real server's: ids int64, positions stored in the datastack's voxels
and answered in nm (``desired_resolution=[1, 1, 1]``, as the engine scales them), reference
tables joined to the nucleus table (clashing columns ``_ref``), nullable boolean proofreading
statuses (``None`` where a cell was never assessed), plain ``Unsure`` labels, nuclei with root
id 0 and two nuclei merged into one root. Like :class:`tests.cave_mock.FakeCave` it shuffles
rows on every request, caps answers with the ``Warning: 201`` header, pages by ``id`` ranges
and ``offset``/``limit``, answers row counts, and also the version and table listings. Used by
``test_population.py``, ``bench/population_pull.py`` and ``notebooks/population_query.ipynb``.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Iterator

import numpy as np
import pandas as pd
import responses
from caveclient.tools.testing import TEST_LOCAL_SERVER, CAVEclientMock

from connectomics.profiles import DatastackProfile, load_profile
from tests.cave_mock import RANGE_FILTERS, RunawayPull, arrow_body

ROOT0 = 864691136_000_000_000
#: presynaptic segments that are no cell of any table (axon fragments)
FRAGMENT0 = 864691137_000_000_000


def make_population_world(profile: DatastackProfile, n_cells: int = 400, n_syn: int = 8000,
                          n_fragments: int = 50, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables of a fake datastack of ``profile`` as its server holds them (positions in voxels).

    Somata fill a slab 0-1000 um deep in the profile's frame; cell types cycle through the
    profile's vocabulary; every tenth proofreading status is unknown (None)."""
    rng = np.random.default_rng(seed)
    voxel = np.asarray(profile.voxel_nm)
    nuc_id = np.arange(n_cells, dtype=np.int64) + 100_000
    roots = np.arange(n_cells, dtype=np.int64) + ROOT0
    roots[3] = 0                      # a nucleus with no segment under it
    roots[5] = roots[4]               # two nuclei merged into one root
    nm = np.column_stack([rng.uniform(5.0e5, 9.0e5, n_cells), rng.uniform(3.5e5, 1.3e6, n_cells),
                          rng.uniform(6.0e5, 1.0e6, n_cells)])
    vox = np.round(nm / voxel).astype(np.int64)
    nucleus = pd.DataFrame({
        "id": nuc_id, "created": pd.Timestamp("2023-01-01", tz="UTC"), "valid": True,
        "volume": rng.uniform(100, 400, n_cells), "pt_supervoxel_id": roots + 11, "pt_root_id": roots,
        "pt_position_x": vox[:, 0], "pt_position_y": vox[:, 1], "pt_position_z": vox[:, 2],
    })
    types = list(profile.cell_types)
    labels = np.array([types[i % len(types)] for i in range(n_cells)], dtype=object)
    system = np.where(np.isin(labels, profile.inhibitory), "inhibitory", "excitatory")
    if profile.name == "minnie65_public":
        system = np.char.add(system.astype(str), "_neuron").astype(object)

    def reference(cell_type: np.ndarray, systems, first_id: int) -> pd.DataFrame:
        ref = nucleus.rename(columns={"id": "id_ref", "created": "created_ref", "valid": "valid_ref"})
        own = pd.DataFrame({"id": np.arange(n_cells, dtype=np.int64) + first_id,
                            "created": pd.Timestamp("2023-06-01", tz="UTC"), "valid": True,
                            "target_id": nuc_id, "classification_system": systems, "cell_type": cell_type})
        return pd.concat([own, ref], axis=1)

    status_axon = pd.array(rng.random(n_cells) < 0.5, dtype="boolean")
    status_axon[rng.random(n_cells) < 0.1] = pd.NA
    status_dendrite = pd.array(rng.random(n_cells) < 0.6, dtype="boolean")
    full = rng.random(n_cells) < 0.5
    proof = pd.DataFrame({
        "id": np.arange(n_cells, dtype=np.int64) + 1, "created": pd.Timestamp("2023-03-01", tz="UTC"),
        "valid": True, "pt_supervoxel_id": roots + 11, "pt_root_id": roots, "valid_id": roots,
        "status_dendrite": status_dendrite, "status_axon": status_axon,
        "strategy_dendrite": np.where(status_dendrite.to_numpy(bool, na_value=False), "dendrite_extended", "none"),
        "strategy_axon": np.where(status_axon.to_numpy(bool, na_value=False),
                                  np.where(full, "axon_fully_extended",
                                           "axon_partially_extended"), "none"),
        "pt_position_x": vox[:, 0], "pt_position_y": vox[:, 1], "pt_position_z": vox[:, 2],
    })
    partners = np.concatenate([roots[roots != 0], np.arange(n_fragments, dtype=np.int64) + FRAGMENT0])
    pre = rng.choice(partners, n_syn)
    post = rng.choice(roots[roots != 0], n_syn)
    ctr = np.round(rng.uniform(4e5, 1e6, size=(n_syn, 3)) / voxel).astype(np.int64)
    synapses = pd.DataFrame({
        "id": rng.permutation(n_syn).astype(np.int64) * 7 + 10, "created": pd.Timestamp("2022-01-01", tz="UTC"),
        "valid": True, "size": rng.integers(50, 5000, n_syn).astype(np.int64),
        "pre_pt_supervoxel_id": pre + 11, "pre_pt_root_id": pre,
        "post_pt_supervoxel_id": post + 11, "post_pt_root_id": post,
        "ctr_pt_position_x": ctr[:, 0], "ctr_pt_position_y": ctr[:, 1], "ctr_pt_position_z": ctr[:, 2],
    })
    world = {
        profile.table("nucleus"): nucleus,
        profile.table("cell_types"): reference(labels, system, 1),
        profile.table("proofreading"): proof,
        profile.table("synapses"): synapses,
    }
    if "mtypes" in profile.tables:
        mt = np.array(["L2a", "L3b", "L4a", "L5ET", "PTC", "DTC"], dtype=object)[np.arange(n_cells) % 6]
        world[profile.table("mtypes")] = reference(mt, "aibs_mtype", 50_000)
    return world


def expected_cells(world: dict[str, pd.DataFrame], profile: DatastackProfile) -> pd.DataFrame:
    """The cell table as the server answers it (nm positions), for independent filters in tests."""
    cells = world[profile.table("cell_types")].copy()
    for i, a in enumerate("xyz"):
        cells[f"pt_position_{a}"] = cells[f"pt_position_{a}"] * profile.voxel_nm[i]
    return cells


class FakePopulationServer:
    """The materialization engine of ``profile``'s datastack over ``world`` (module docstring)."""

    def __init__(self, world: dict[str, pd.DataFrame], profile: DatastackProfile, *, versions=(None,),
                 cap: int | None = None, shuffle: bool = True, max_queries: int = 5000, seed: int = 0) -> None:
        self.world, self.profile = world, profile
        self.versions = [profile.default_version if v is None else v for v in versions]
        self.cap, self.shuffle, self.max_queries = cap, shuffle, max_queries
        self.rng = np.random.default_rng(seed)
        self.failures: dict[int, BaseException] = {}
        #: like ``failures``, counted over the synapse table's queries only
        self.synapse_failures: dict[int, BaseException] = {}
        self.n_synapse_queries = 0
        self.n_queries = 0
        self.answered: list[dict] = []
        ds = re.escape(profile.name)
        base = f"{TEST_LOCAL_SERVER}/materialize/api/v[23]/datastack/{ds}"
        self.query_url = re.compile(base + r"/version/(?P<version>\d+)(/table/(?P<table>[^/]+))?/query")
        self.meta_url = re.compile(base + r"/version/(?P<version>\d+)/table/(?P<table>[^/]+)/metadata")
        self.count_url = re.compile(base + r"/version/(?P<version>\d+)/table/(?P<table>[^/]+)/count")
        self.versions_url = re.compile(base + r"/versions")
        self.tables_url = re.compile(base + r"/version/(?P<version>\d+)/tables$")

    def client(self) -> CAVEclientMock:
        """A caveclient ``CAVEclientMock`` of this datastack at its first version."""
        return CAVEclientMock(datastack_name=self.profile.name, materialization=True,
                              available_materialization_versions=self.versions, set_version=self.versions[0])

    def install(self, rsps: responses.RequestsMock) -> "FakePopulationServer":
        rsps.add_callback(responses.POST, self.query_url, callback=self.on_query)
        rsps.add_callback(responses.GET, self.meta_url, callback=self.on_metadata)
        rsps.add_callback(responses.GET, self.count_url, callback=self.on_count)
        rsps.add_callback(responses.GET, self.versions_url, callback=self._json(lambda r: self.versions))
        rsps.add_callback(responses.GET, self.tables_url, callback=self._json(lambda r: sorted(self.world)))
        return self

    @staticmethod
    def _json(answer):
        return lambda request: (200, {"Content-Type": "application/json"}, json.dumps(answer(request)))

    def _reference(self, table: str) -> bool:
        return "target_id" in self.world[table].columns

    def on_metadata(self, request):
        table = self.meta_url.match(request.url).group("table")
        ref = self._reference(table)
        md = {"table_name": table, "schema_type": "cell_type_reference" if ref else "x",
              "reference_table": self.profile.table("nucleus") if ref else None,
              **{f"voxel_resolution_{a}": v for a, v in zip("xyz", self.profile.voxel_nm)}}
        return 200, {"Content-Type": "application/json"}, json.dumps(md)

    def on_count(self, request):
        table = self.count_url.match(request.url).group("table")
        return 200, {"Content-Type": "application/json"}, json.dumps(len(self.world[table]))

    def on_query(self, request):
        n = self.n_queries
        self.n_queries += 1
        if self.n_queries > self.max_queries:
            raise RunawayPull(f"{self.n_queries} queries")
        if n in self.failures:
            raise self.failures[n]
        m = self.query_url.match(request.url)
        assert int(m.group("version")) in self.versions
        body = json.loads(request.body)
        table = m.group("table") or body["tables"][0][0]
        assert body["desired_resolution"] == [1, 1, 1]
        if table == self.profile.table("synapses"):
            self.n_synapse_queries += 1
            if self.n_synapse_queries - 1 in self.synapse_failures:
                raise self.synapse_failures[self.n_synapse_queries - 1]
        world = self.world[table]
        keep = np.ones(len(world), dtype=bool)   # one mask, rows copied once (a cheap server)
        for col, vals in (body.get("filter_in_dict") or {}).get(table, {}).items():
            keep &= world[col].isin(vals).to_numpy()
        for col, val in (body.get("filter_equal_dict") or {}).get(table, {}).items():
            keep &= (world[col] == val).to_numpy()
        for key, op in RANGE_FILTERS.items():
            for col, val in (body.get(key) or {}).get(table, {}).items():
                keep &= getattr(world[col], op)(val).to_numpy()
        rows = np.flatnonzero(keep)
        if self.shuffle:
            rows = rows[self.rng.permutation(len(rows))]
        offset, limit = int(body.get("offset") or 0), body.get("limit")
        df = world.iloc[rows[offset: None if limit is None else offset + int(limit)]]
        headers = {"Content-Type": "data.arrow", "dataframe_resolution": "1, 1, 1"}
        if self.cap is not None and len(df) >= self.cap:
            df = df.iloc[: self.cap]
            headers["Warning"] = f'201 - "Limited query to {self.cap} rows'
        df = df.copy()
        for col in [c for c in df.columns if re.search(r"_position_[xyz]$", c)]:
            df[col] = df[col] * self.profile.voxel_nm["xyz".index(col[-1])]   # voxels -> nm
        self.answered.append({"table": table, "rows": len(df), "filters": body.get("filter_in_dict")})
        return 200, headers, arrow_body(df.reset_index(drop=True))


@contextlib.contextmanager
def population_server(datastack: str = "minnie65_public", **world_kw) -> Iterator[tuple[FakePopulationServer, object]]:
    """A fake server of ``datastack``'s profile over a fresh world, installed in a ``responses``
    mock, and ``caveclient.CAVEclient`` replaced by a builder of its ``CAVEclientMock`` (for code
    that builds its own client: the CLI, notebooks). Yields ``(server, client)``."""
    from unittest import mock

    profile = load_profile(datastack)
    server_kw = {k: world_kw.pop(k) for k in ("cap", "versions", "shuffle") if k in world_kw}
    world = make_population_world(profile, **world_kw)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server = FakePopulationServer(world, profile, **server_kw)
        client = server.client()
        server.install(rsps)
        with mock.patch("caveclient.CAVEclient", lambda *a, **k: server.client()):
            yield server, client
