"""Population queries through caveclient's ``CAVEclientMock`` and a fake materialization server
(``tests/population_mock.py``: voxel positions, nullable bool statuses, "Unsure" labels, merged
roots, shuffled and capped answers): the cells a query selects against independent pandas
filters on the same rows, proofreading, two datastack profiles, a resumed synapse pull, outside
inputs, bad input (one error naming field and table, nothing in the cache), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connectomics.build import build_graph
from connectomics.cache import TableCache
from connectomics.profiles import ProfileError, known_profiles, load_profile
from connectomics.schema import SYNAPSE_TABLE
from connectomics.sources.population import (
    PopulationQuery, PopulationSource, QueryError, outside_inputs,
)
from tests.cave_mock import Killed
from tests.population_mock import FRAGMENT0, expected_cells, population_server


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("CAVE_TOKEN", "just_a_test")


def source(client, query: PopulationQuery, batch_size: int = 25) -> PopulationSource:
    return PopulationSource(query, client=client, batch_size=batch_size, timeout_s=5.0, max_retries=0)


def frame_um(cells: pd.DataFrame, transform) -> np.ndarray:
    return transform.apply(cells[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(float))


def files_under(path: Path) -> list[Path]:
    return [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).exists() else []


# -- profiles -------------------------------------------------------------------------------------
def test_two_profiles_name_their_tables_and_an_unknown_one_lists_them():
    assert {"minnie65_public", "v1dd_public"} <= set(known_profiles())
    minnie, v1dd = load_profile("minnie65_public"), load_profile("v1dd_public")
    assert minnie.table("cell_types") == "aibs_metamodel_celltypes_v661" and minnie.voxel_nm == (4, 4, 40)
    assert v1dd.table("synapses") == "synapses_v1dd" and v1dd.voxel_nm == (9, 9, 45)
    assert v1dd.ei_of("PTC") == "I" and v1dd.ei_of("L2IT") == "E"
    with pytest.raises(ProfileError, match="datastack profile 'v1dd_public' names no mtypes table"):
        v1dd.table("mtypes")
    with pytest.raises(ProfileError, match="unknown datastack profile 'h01'.*minnie65_public, v1dd_public"):
        load_profile("h01")


# -- selection against independent pandas filters -----------------------------------------------------
def test_box_and_type_filter_give_exactly_the_pandas_selection(tmp_path):
    box = ((6.0e5, 4.0e5, 6.5e5), (8.5e5, 1.1e6, 9.5e5))
    query = PopulationQuery(cell_types=("23P", "BC", "Unsure"), bbox_nm=box)
    with population_server(n_cells=400, n_syn=2000, cap=60) as (server, client):   # capped answers: paged
        got = source(client, query).resolve()["population"]
        cells = expected_cells(server.world, server.profile)
    counts = cells["pt_root_id"].value_counts()
    lo, hi = np.asarray(box)
    pos = cells[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(float)
    want = cells[cells["cell_type"].isin(["23P", "BC", "Unsure"]) & ((pos >= lo) & (pos < hi)).all(axis=1)
                 & (cells["pt_root_id"] != 0) & cells["pt_root_id"].map(counts).eq(1)]
    assert len(want) > 10 and any(q["rows"] == 60 for q in server.answered)
    assert got["pt_root_id"].tolist() == sorted(want["pt_root_id"].tolist())
    assert set(got["cell_type"]) == {"23P", "BC", "Unsure"}


def test_depth_cylinder_and_limit_in_the_standard_frame():
    import standard_transform

    query = PopulationQuery(cell_types="4P,MC", depth_um=(150, 600), radius_um=150.0, center_um=(700.0, 800.0))
    with population_server(n_cells=600, n_syn=1000) as (server, client):
        got = source(client, query).resolve()["population"]
        limited = source(client, PopulationQuery(cell_types="4P,MC", depth_um=(150, 600), limit=7, seed=3)).resolve()
        again = source(client, PopulationQuery(cell_types="4P,MC", depth_um=(150, 600), limit=7, seed=3)).resolve()
        cells = expected_cells(server.world, server.profile)
    frame = frame_um(cells, standard_transform.minnie_transform(resolution="nm"))
    keep = (cells["cell_type"].isin(["4P", "MC"]) & (frame[:, 1] >= 150) & (frame[:, 1] < 600)
            & (np.hypot(frame[:, 0] - 700, frame[:, 2] - 800) <= 150) & (cells["pt_root_id"] != 0)
            & ~cells["pt_root_id"].duplicated(keep=False))
    assert keep.sum() > 3
    assert got["pt_root_id"].tolist() == sorted(cells.loc[keep, "pt_root_id"])
    assert len(limited["population"]) == 7 and limited["funnel"]["in_space"] > 7
    # the same seed draws the same cells whatever order the server sent the rows in
    assert limited["population"]["pt_root_id"].tolist() == again["population"]["pt_root_id"].tolist()


def test_proofreading_filter_status_and_strategies():
    with population_server(n_cells=300, n_syn=500) as (server, client):
        axon = source(client, PopulationQuery(cell_types="23P,4P,5P-IT", proofread=["axon"])).resolve()
        both = source(client, PopulationQuery(cell_types="23P,4P,5P-IT", proofread={
            "axon": ["axon_fully_extended"], "dendrite": ["dendrite_extended"]})).resolve()
        cells = expected_cells(server.world, server.profile)
        proof = server.world[server.profile.table("proofreading")]
    typed = cells[cells["cell_type"].isin(["23P", "4P", "5P-IT"]) & (cells["pt_root_id"] != 0)
                  & ~cells["pt_root_id"].duplicated(keep=False)]
    axon_ok = proof.loc[proof["status_axon"].fillna(False).astype(bool), "pt_root_id"]   # unknown status: not proofread
    assert axon["population"]["pt_root_id"].tolist() == sorted(typed.loc[typed["pt_root_id"].isin(axon_ok), "pt_root_id"])
    strat = proof.loc[(proof["strategy_axon"] == "axon_fully_extended")
                      & (proof["strategy_dendrite"] == "dendrite_extended"), "pt_root_id"]
    assert both["population"]["pt_root_id"].tolist() == sorted(typed.loc[typed["pt_root_id"].isin(strat), "pt_root_id"])
    assert 0 < len(both["population"]) < len(axon["population"])
    assert str(axon["population_proofreading"]["status_axon"].dtype) == "boolean"


def test_v1dd_profile_builds_a_graph_with_its_own_tables_and_frame(tmp_path):
    import standard_transform

    with population_server("v1dd_public", n_cells=200, n_syn=3000) as (server, client):
        res = build_graph(source(client, PopulationQuery(datastack="v1dd_public", cell_types="L2IT,L3IT,PTC")),
                          tmp_path, progress=False)
        tables = {q["table"] for q in server.answered}
    assert tables == {"cell_type_multifeature_v1", "synapses_v1dd"}   # no m-type table on V1DD
    nodes = res.graph.nodes
    assert set(nodes["cell_type"]) == {"L2IT", "L3IT", "PTC"}
    assert set(nodes.loc[nodes["cell_type"] == "PTC", "ei"]) == {"I"}
    depth = standard_transform.v1dd_transform(resolution="nm").apply(nodes[["x_nm", "y_nm", "z_nm"]].to_numpy())[:, 1]
    np.testing.assert_allclose(nodes["depth_um"], depth)
    assert res.graph.meta["datastack"] == "v1dd_public" and res.graph.meta["version"] == 1196


# -- synapses -------------------------------------------------------------------------------------
def _synapse_parts(cache: TableCache) -> pd.DataFrame:
    files = cache.partition_files(SYNAPSE_TABLE)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).sort_values("id").reset_index(drop=True)


def test_resumed_synapse_pull_equals_an_uninterrupted_one(tmp_path):
    query = PopulationQuery(cell_types="23P,4P,BC,MC", depth_um=(0, 900))
    with population_server(n_cells=300, n_syn=6000, cap=400) as (server, client):
        whole = build_graph(source(client, query, batch_size=10), tmp_path / "a", progress=False)
        src = source(client, query, batch_size=10)
        server.synapse_failures = {server.n_synapse_queries + 3: Killed()}   # the 4th synapse query
        with pytest.raises(Killed):
            build_graph(src, tmp_path / "b", progress=False)
        cache_b = TableCache(tmp_path / "b", src.namespace, src.cache_version)
        done = [k for k in cache_b.manifest() if k.startswith(SYNAPSE_TABLE + "/")]
        assert done and SYNAPSE_TABLE not in cache_b.manifest()
        server.synapse_failures = {}
        asked = server.n_queries
        resumed = build_graph(source(client, query, batch_size=10), tmp_path / "b", progress=False)
        redone = server.answered[-(server.n_queries - asked):]
    assert all(q["table"] == "synapses_pni_2" for q in redone)   # the population came from the cache
    n_batches = -(-resumed.graph.n_nodes // 10)
    assert len(done) < n_batches
    pd.testing.assert_frame_equal(_synapse_parts(cache_b), _synapse_parts(whole.cache))
    pd.testing.assert_frame_equal(resumed.graph.edges, whole.graph.edges)
    assert resumed.graph.checksum() == whole.graph.checksum()


def test_synapses_equal_the_pandas_join_and_outside_inputs_are_counted_by_type(tmp_path):
    query = PopulationQuery(cell_types="23P,BC", outside_inputs="counts")
    with population_server(n_cells=240, n_syn=6000, n_fragments=30) as (server, client):
        res = build_graph(source(client, query), tmp_path, progress=False)
        syn = server.world["synapses_pni_2"]
        cells = expected_cells(server.world, server.profile)
    roots = set(res.graph.nodes["root_id"])
    inside = syn[syn["pre_pt_root_id"].isin(roots) & syn["post_pt_root_id"].isin(roots)
                 & (syn["pre_pt_root_id"] != syn["post_pt_root_id"])]
    assert int(res.graph.edges["n_synapses"].sum()) == len(inside)
    table = outside_inputs(res.graph)
    onto = syn[syn["post_pt_root_id"].isin(roots) & ~syn["pre_pt_root_id"].isin(roots)]
    one = cells[(cells["pt_root_id"] != 0) & ~cells["pt_root_id"].duplicated(keep=False)]
    pre_type = onto["pre_pt_root_id"].map(one.set_index("pt_root_id")["cell_type"]).fillna("unknown")
    want = onto.assign(pre_cell_type=pre_type).groupby(["post_pt_root_id", "pre_cell_type"]).size()
    got = table.set_index(["post_pt_root_id", "pre_cell_type"])["n_synapses"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index().rename("n_synapses"), check_dtype=False)
    assert (onto["pre_pt_root_id"] >= FRAGMENT0).any() and "unknown" in set(table["pre_cell_type"])
    assert {"4P", "MC"} <= set(table["pre_cell_type"])     # inhibition from outside the selection is kept
    assert res.graph.meta["outside_inputs"]["n_synapses"] == len(onto)


# -- records ----------------------------------------------------------------------------------------
def test_query_and_root_ids_are_in_the_manifest_and_meta(tmp_path):
    query = PopulationQuery(cell_types="23P,4P", depth_um=(100, 400), proofread=["axon"])
    path = query.save(tmp_path / "q.json")
    assert PopulationQuery.load(path) == query
    with population_server(n_cells=300, n_syn=2000) as (server, client):
        res = build_graph(source(client, PopulationQuery.load(path)), tmp_path / "cache", progress=False)
    meta = json.loads((res.folder / "meta.json").read_text())
    assert meta["query"]["cell_types"] == ["23P", "4P"] and meta["query"]["version"] == 1300
    assert meta["population"]["root_ids"] == sorted(res.graph.nodes["root_id"].tolist())
    assert meta["query_key"] in str(res.folder)
    entry = res.cache.manifest()["population"]
    assert entry["query"]["query"]["depth_um"] == [100.0, 400.0]
    assert entry["query"]["n_cells"] == res.graph.n_nodes


# -- bad input: one error naming field and table, nothing in the cache ---------------------------------
@pytest.mark.parametrize("query, match", [
    (PopulationQuery(filters={"soma_depth": ["1"]}),
     r"filters\['soma_depth'\]: table 'aibs_metamodel_celltypes_v661' has no column 'soma_depth'"),
    (PopulationQuery(cell_types="23P", bbox_nm=((1e8, 1e8, 1e8), (2e8, 2e8, 2e8))),
     r"bbox_nm .* lies outside the volume: the \d+ cells of table 'aibs_metamodel_celltypes_v661'"),
    (PopulationQuery(cell_types="23P", depth_um=(5000, 6000)), r"depth_um \[5000.0, 6000.0\] lies outside the volume"),
    (PopulationQuery(cell_types="NGC", bbox_nm=((7.5e5, 8e5, 8e5), (7.51e5, 8.01e5, 8.01e5))),
     r"selects no cells of table 'aibs_metamodel_celltypes_v661': table_rows \d+"),
    (PopulationQuery(version=999), r"version 999: datastack 'minnie65_public' has no materialization version 999"),
    (PopulationQuery(cell_types="23Q"), r"cell_types \['23Q'\] are not labels of table 'aibs_metamodel_celltypes_v661'"),
    (PopulationQuery(datastack="h01"), r"unknown datastack profile 'h01'; known profiles: minnie65_public, v1dd_public"),
])
def test_bad_query_is_one_error_and_nothing_is_cached(tmp_path, query, match):
    with population_server(n_cells=120, n_syn=300) as (server, client):
        with pytest.raises(QueryError, match=match):
            build_graph(source(client, query), tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_a_table_the_server_lacks_names_the_profile_and_table(tmp_path):
    with population_server(n_cells=100, n_syn=100) as (server, client):
        del server.world["proofreading_status_and_strategy"]
        with pytest.raises(QueryError, match="datastack profile 'minnie65_public': proofreading table "
                                             "'proofreading_status_and_strategy' is not on the server"):
            build_graph(source(client, PopulationQuery(proofread=["axon"])), tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_malformed_query_fields_name_the_field(tmp_path):
    with pytest.raises(QueryError, match="proofread compartment 'soma'"):
        PopulationQuery(proofread=["soma"])
    with pytest.raises(QueryError, match="bbox_nm's first corner must be below"):
        PopulationQuery(bbox_nm=((1, 1, 1), (0, 2, 2)))
    (tmp_path / "q.json").write_text(json.dumps({"cell_type": ["23P"]}))
    with pytest.raises(QueryError, match=r"q.json: unknown field\(s\) \['cell_type'\]"):
        PopulationQuery.load(tmp_path / "q.json")


# -- the CLI --------------------------------------------------------------------------------------------
def test_cli_builds_the_issue_query_through_the_mock(tmp_path, capsys):
    from pipelines.build_graph import main

    argv = ["--source", "cave", "--datastack", "minnie65_public", "--cell-types", "23P,4P", "--depth", "100", "400",
            "--proofread", "axon", "--cache_root", str(tmp_path), "--quiet", "--save-query", str(tmp_path / "q.json")]
    with population_server(n_cells=400, n_syn=4000):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "population query" in out and "selected" in out
        assert main(["--source", "cave", "--query", str(tmp_path / "q.json"), "--cache_root", str(tmp_path),
                     "--quiet"]) == 0
        assert "(read from cache)" in capsys.readouterr().out
    query = PopulationQuery.load(tmp_path / "q.json")
    assert query.cell_types == ("23P", "4P") and query.proofread == {"axon": ()}


@pytest.mark.parametrize("argv, match", [
    (["--filter", "nope=1"], "has no column 'nope'"),
    (["--cell-types", "23P", "--version", "4"], "has no materialization version 4"),
    (["--cell-types", "23P", "--datastack", "fly"], "unknown datastack profile 'fly'"),
    (["--cell-types", "23P", "--bbox", "0", "0", "0", "1", "1", "1"], "bbox_nm [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]] lies outside"),
])
def test_cli_bad_query_is_one_line_exit_2(tmp_path, capsys, argv, match):
    from pipelines.build_graph import main

    with population_server(n_cells=100, n_syn=100):
        rc = main(["--source", "cave", "--cache_root", str(tmp_path / "c"), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and match in err and len(err.splitlines()) == 1
    assert files_under(tmp_path / "c") == []


def test_a_checkpoint_names_the_population_graph(tmp_path):
    import torch

    from pipelines.checkpoint import best_subset, graph_record, make_checkpoint

    query = PopulationQuery(cell_types="23P,4P", depth_um=(100, 400))
    with population_server(n_cells=200, n_syn=1500) as (server, client):
        graph = build_graph(source(client, query), tmp_path, progress=False).graph
    model = torch.nn.Linear(2, 2)
    from pipelines.config import Config

    ckpt = make_checkpoint(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), state={},
                           schedule={}, rng={}, cfg=Config(), world_size=1, graph_checksum=graph.checksum(),
                           graph=graph_record(graph))
    record = best_subset(ckpt, 0, 0.5)["graph"]
    assert record == {"source": "cave", "datastack": "minnie65_public", "version": 1300,
                      "query": query.resolved(load_profile("minnie65_public")).to_dict(),
                      "query_key": graph.meta["query_key"], "checksum": graph.checksum()}
    assert graph_record(None) == {}
