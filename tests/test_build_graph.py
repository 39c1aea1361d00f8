"""`python -m pipelines.build_graph`: graph files, cache reuse, snapshots, clear errors."""

from __future__ import annotations

import gzip
import json

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from connectomics import load_graph
from connectomics.build import build_graph, make_source
from connectomics.schema import COLUMN_TABLE, COLUMN_TABLES, SYNAPSE_TABLE
from connectomics.sources.base import SourceError
from connectomics.sources.snapshot import SnapshotSource
from connectomics.sources.surrogate import SurrogateSource
from pipelines import build_graph as cli


def test_cli_builds_graph_and_reuses_cache(tmp_path, capsys, monkeypatch):
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cells: 1351  (1188 E, 163 I)" in out and "(generated)" in out
    folder = tmp_path / "surrogate" / "v0" / "graph"
    for f in ("nodes.parquet", "edges.parquet", "type_graph.graphml", "type_nodes.parquet",
              "type_edges.parquet", "meta.json"):
        assert (folder / f).exists(), f
    manifest = json.loads((tmp_path / "surrogate" / "v0" / "manifest.json").read_text())
    assert set(manifest) == set(COLUMN_TABLES)
    assert manifest[SYNAPSE_TABLE]["source"] == "surrogate"
    assert "NOT MICrONS" in manifest[SYNAPSE_TABLE]["query"]["note"]

    # second run: no query at all
    def no_query(*a, **k):
        raise AssertionError("queried the source although everything is cached")

    monkeypatch.setattr(SurrogateSource, "fetch_table", no_query)
    monkeypatch.setattr(SurrogateSource, "fetch_synapses", no_query)
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 0
    assert "read from cache" in capsys.readouterr().out


def test_graph_files_agree(surrogate_graph):
    g = load_graph(surrogate_graph.folder)
    assert g.n_nodes == 1351
    pd.testing.assert_frame_equal(g.edges, surrogate_graph.graph.edges)
    tg = nx.read_graphml(surrogate_graph.folder / "type_graph.graphml")
    assert tg.number_of_edges() == g.type_graph.number_of_edges()
    a, b, d = next(iter(tg.edges(data=True)))
    assert d["connection_probability"] == pytest.approx(d["connected_pairs"] / d["possible_pairs"])
    # every synapse counted once: type graph total = edge total = synapse table rows
    syn = surrogate_graph.cache.read(SYNAPSE_TABLE)
    assert sum(d["n_synapses"] for *_, d in g.type_graph.edges(data=True)) == len(syn) == g.edges["n_synapses"].sum()
    data = g.to_pyg()
    assert data.edge_index.shape == (2, len(g.edges)) and data.num_nodes == 1351
    assert int(data.is_inhibitory.sum()) == 163


def test_snapshot_source_gives_the_same_graph(tmp_path, surrogate_graph):
    """Static dumps in CAVE's form ("[x y z]" voxel positions, CSV.gz and split Parquet parts)."""
    src = SurrogateSource(0)
    snap = tmp_path / "snap"
    (snap / SYNAPSE_TABLE).mkdir(parents=True)
    vox = np.array([4.0, 4.0, 40.0])
    for table in COLUMN_TABLES[:-1]:
        df = src.fetch_table(table, progress=False)
        cols = [f"pt_position_{a}" for a in "xyz"]
        if cols[0] in df.columns:
            pos = df[cols].to_numpy() / vox
            df = df.drop(columns=cols)
            df["pt_position"] = ["[%r %r %r]" % tuple(map(float, p)) for p in pos]
        with gzip.open(snap / f"{table}.csv.gz", "wt") as f:
            df.to_csv(f, index=False)
    syn = src.column.synapses.copy()
    for a, r in zip("xyz", vox):
        syn[f"ctr_pt_position_{a}"] /= r
    for i, part in enumerate(np.array_split(np.arange(len(syn)), 3)):
        syn.iloc[part].to_parquet(snap / SYNAPSE_TABLE / f"part{i}.parquet", index=False)
    source = make_source("snapshot", path=str(snap), version=1)
    assert source.kind == "snapshot"
    res = build_graph(source, tmp_path / "cache", progress=False)
    pd.testing.assert_frame_equal(res.graph.edges, surrogate_graph.graph.edges)
    pd.testing.assert_frame_equal(res.graph.nodes[["root_id", "cell_type", "mtype", "layer"]],
                                  surrogate_graph.graph.nodes[["root_id", "cell_type", "mtype", "layer"]])


def test_snapshot_bad_file_names_file_and_row(tmp_path):
    src = SurrogateSource(0)
    snap = tmp_path / "snap"
    snap.mkdir()
    df = src.fetch_table(COLUMN_TABLES[0], progress=False)
    df["pt_root_id"] = df["pt_root_id"].astype(object)
    df.loc[5, "pt_root_id"] = "oops"
    df.to_csv(snap / f"{COLUMN_TABLES[0]}.csv", index=False)
    code = cli.main(["--source", "snapshot", str(snap), "--cache", str(tmp_path / "c"), "--quiet"])
    assert code == 2
    assert not list((tmp_path / "c").rglob(f"{COLUMN_TABLES[0]}.parquet"))


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["--source", "snapshot", str(tmp_path / "missing"), "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a folder" in err and err.startswith("build_graph: error: ")
    with pytest.raises(SystemExit):
        cli.main(["--source", "snapshot"])
    with pytest.raises(SourceError, match="is not a folder"):   # --debug: the traceback
        cli.main(["--source", "snapshot", str(tmp_path / "missing"), "--cache", str(tmp_path), "--debug"])


# -- snapshots shaped like real dumps, and CLI errors ----------------------------------------------
VOXEL_NM = np.array([4.0, 4.0, 40.0])


def write_snapshot(folder, *, seed: int = 0, n_cells: int = 300, nm: bool = False, attrs: bool = False,
                   fmt: str = "parquet", bool_status: bool = False) -> dict[str, pd.DataFrame]:
    """The first ``n_cells`` cells of a surrogate column as a snapshot folder; positions in nm
    (``nm``) or 4x4x40 voxels; ``attrs`` stores caveclient's ``dataframe_resolution`` in df.attrs."""
    src = SurrogateSource(seed)
    folder.mkdir(parents=True, exist_ok=True)
    column = src.fetch_table(COLUMN_TABLES[0], progress=False).iloc[:n_cells]
    roots = column["pt_root_id"].to_numpy()
    tables = {}
    for table in COLUMN_TABLES:
        if table == SYNAPSE_TABLE:
            df = src.fetch_synapses(roots, progress=False)
        else:
            df = src.fetch_table(table, progress=False)
            key = "target_id" if "target_id" in df.columns else ("id" if table == "nucleus_detection_v0"
                                                                 else "pt_root_id")
            df = df[df[key].isin(column["target_id"] if key != "pt_root_id" else roots)]
        if bool_status and "status_axon" in df.columns:
            df = df.assign(status_dendrite=True, status_axon=np.arange(len(df)) % 3 > 0)
        for prefix in ("pt_position", "ctr_pt_position"):
            for a, r in zip("xyz", VOXEL_NM):
                if f"{prefix}_{a}" in df.columns and not nm:
                    df[f"{prefix}_{a}"] = df[f"{prefix}_{a}"] / r
        df = df.reset_index(drop=True)
        if attrs:
            df.attrs["dataframe_resolution"] = [1, 1, 1] if nm else VOXEL_NM.tolist()
        if fmt == "parquet":
            df.to_parquet(folder / f"{table}.parquet", index=False)
        else:
            df.to_csv(folder / f"{table}.csv", index=False)
        tables[table] = df
    return tables


def snapshot_cli(snap, cache, *extra) -> list[str]:
    return ["--source", "snapshot", str(snap), "--cache", str(cache), "--quiet", *extra]


def test_snapshot_bool_status_rebuilds_from_cache(tmp_path, capsys):
    snap = tmp_path / "snap"
    write_snapshot(snap, bool_status=True)
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 0
    assert "read from snapshot" in capsys.readouterr().out
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 0, capsys.readouterr().err  # guards against: CacheError
    assert "read from cache" in capsys.readouterr().out


def test_snapshot_reads_dataframe_resolution_from_parquet(tmp_path, surrogate_graph):
    snap = tmp_path / "snap"
    write_snapshot(snap, nm=True, attrs=True)  # nm positions, saved with caveclient's attrs
    res = build_graph(make_source("snapshot", path=str(snap)), tmp_path / "c", progress=False)
    want = surrogate_graph.graph.nodes.set_index("root_id").loc[res.graph.nodes["root_id"]]
    assert res.graph.nodes["layer"].tolist() == want["layer"].tolist()  # guards against: all WM
    np.testing.assert_allclose(res.graph.nodes["depth_um"], want["depth_um"], atol=1e-6)


@pytest.mark.parametrize("nm, flag, hint", [
    (True, [], "look like nm: pass --resolution 1 1 1"),
    (False, ["--resolution", "1", "1", "1"], "look like 4x4x40 nm voxels: pass --resolution 4 4 40"),
])
def test_snapshot_unit_mistake_is_refused(tmp_path, capsys, nm, flag, hint):
    snap = tmp_path / "snap"
    write_snapshot(snap, nm=nm, fmt="csv")  # CSV: no metadata to say the unit
    assert cli.main(snapshot_cli(snap, tmp_path / "c", *flag)) == 2
    err = capsys.readouterr().err
    assert "outside the volume" in err and hint in err and COLUMN_TABLES[0] in err
    fixed = ["--resolution", "1", "1", "1"] if nm else []
    assert cli.main(snapshot_cli(snap, tmp_path / "c", *fixed)) == 0


def test_snapshot_cache_is_keyed_on_the_files(tmp_path):
    cache = tmp_path / "c"
    a, b = tmp_path / "a", tmp_path / "b"
    write_snapshot(a, seed=0)
    write_snapshot(b, seed=1)
    ga = build_graph(make_source("snapshot", path=str(a)), cache, progress=False)
    gb = build_graph(make_source("snapshot", path=str(b)), cache, progress=False)
    assert not gb.from_cache and gb.cache.dir != ga.cache.dir  # guards against: served a's tables
    assert set(gb.graph.nodes["root_id"]) == set(SurrogateSource(1).column.cells["root_id"][:300])
    assert build_graph(make_source("snapshot", path=str(a)), cache, progress=False).from_cache
    # a changed file is read again
    syn = pd.read_parquet(a / f"{SYNAPSE_TABLE}.parquet").iloc[::2]
    syn.to_parquet(a / f"{SYNAPSE_TABLE}.parquet", index=False)
    again = build_graph(make_source("snapshot", path=str(a)), cache, progress=False)
    assert not again.from_cache and again.graph.edges["n_synapses"].sum() == len(syn) - (
        syn["pre_pt_root_id"] == syn["post_pt_root_id"]).sum()


def test_empty_inputs_name_the_table_and_file(tmp_path, capsys):
    snap = tmp_path / "snap"
    tables = write_snapshot(snap)
    syn_file = snap / f"{SYNAPSE_TABLE}.parquet"
    tables[SYNAPSE_TABLE].iloc[:0].to_parquet(syn_file, index=False)
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert SYNAPSE_TABLE in err and str(syn_file) in err and "no rows" in err  # guards against: No objects to concatenate
    proof = snap / "proofreading_status_and_strategy.parquet"
    proof.unlink()
    (snap / "proofreading_status_and_strategy.csv").write_bytes(b"")
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "proofreading_status_and_strategy.csv" in err and "empty" in err  # guards against: EmptyDataError


def test_refresh_recovers_from_a_corrupt_manifest(tmp_path, capsys):
    snap = tmp_path / "snap"
    write_snapshot(snap)
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 0
    manifest = next((tmp_path / "c").rglob("manifest.json"))
    manifest.write_text('{"synapses_pni_2": ')  # truncated
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 2
    assert "--refresh" in capsys.readouterr().err
    assert cli.main(snapshot_cli(snap, tmp_path / "c", "--refresh")) == 0  # guards against: the same CacheError
    assert set(json.loads(manifest.read_text())) == set(COLUMN_TABLES)


def test_error_line_starts_on_a_fresh_line_after_a_progress_bar(tmp_path, capsys, monkeypatch):
    from tqdm.auto import tqdm

    from connectomics.sources.base import SourceError

    def failing(self, root_ids, *, parts=None, progress=True):
        bar = tqdm(total=3, desc="synapses", disable=not progress)  # held by the traceback's frame
        bar.update()
        raise SourceError("server went away")

    monkeypatch.setattr(SurrogateSource, "fetch_synapses", failing)
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path)]) == 2  # progress bars on
    err = capsys.readouterr().err
    assert "synapses" in err  # the bar was drawn
    line = next(seg for seg in err.split("\n") if "server went away" in seg)
    assert line.startswith("build_graph: error: server went away")



# -- bad inputs: refused naming what is wrong, exit status 2 -------------------------------------
@pytest.mark.parametrize("resolution", [["-4", "4", "40"], ["4", "0", "40"], ["4", "4", "nan"]])
def test_a_resolution_that_is_not_positive_is_refused(tmp_path, capsys, resolution):
    snap = tmp_path / "snap"
    write_snapshot(snap, fmt="csv")
    assert cli.main(snapshot_cli(snap, tmp_path / "c", "--resolution", *resolution)) == 2   # guards against: 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--resolution" in err and "must be positive" in err
    with pytest.raises(SourceError, match="must be positive"):
        SnapshotSource(snap, resolution_nm=[float(r) for r in resolution])


def test_synapse_positions_are_unit_checked_like_soma_positions(tmp_path, capsys):
    """Cell tables saved with their dataframe_resolution, synapse parts in nm without it: read as
    4 x 4 x 40 nm voxels they would be cached 4 and 40 times too large."""
    snap = tmp_path / "snap"
    tables = write_snapshot(snap, nm=True, attrs=True)
    syn = tables[SYNAPSE_TABLE].copy()
    syn.attrs = {}
    (snap / f"{SYNAPSE_TABLE}.parquet").unlink()
    (snap / SYNAPSE_TABLE).mkdir()
    syn.iloc[:50].to_parquet(snap / SYNAPSE_TABLE / "part-0.parquet", index=False)
    syn.iloc[50:].to_parquet(snap / SYNAPSE_TABLE / "part-1.parquet", index=False)
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 2                                   # guards against: 0
    err = capsys.readouterr().err
    assert "part-0.parquet" in err and "ctr_pt_position" in err and "look like nm" in err
    assert not list((tmp_path / "c").rglob(f"{SYNAPSE_TABLE}.parquet"))
    assert cli.main(snapshot_cli(snap, tmp_path / "c", "--resolution", "1", "1", "1")) == 0


@pytest.mark.parametrize("value", [np.nan, "abc"])
def test_a_missing_soma_position_names_the_row_not_the_unit(tmp_path, capsys, value):
    snap = tmp_path / "snap"
    write_snapshot(snap, fmt="csv")
    path = snap / f"{COLUMN_TABLE}.csv"
    df = pd.read_csv(path)
    df["pt_position_y"] = df["pt_position_y"].astype(object)
    df.loc[17, "pt_position_y"] = value
    df.to_csv(path, index=False)
    assert cli.main(snapshot_cli(snap, tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "row 17" in err and "pt_position" in err
    assert "outside the volume" not in err                                                    # guards against: it is


@pytest.mark.parametrize("text", ["[]", '{"synapses_pni_2": 5}', '"manifest"'])
def test_a_manifest_of_the_wrong_shape_names_the_file(tmp_path, capsys, text):
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 0
    manifest = tmp_path / "surrogate" / "v0" / "manifest.json"
    manifest.write_text(text)
    capsys.readouterr()
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 2       # guards against: 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(manifest) in err and "--refresh" in err
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet", "--refresh"]) == 0


def test_a_tampered_cache_file_is_a_user_error(tmp_path, capsys):
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 0
    table = tmp_path / "surrogate" / "v0" / f"{COLUMN_TABLE}.parquet"
    SurrogateSource(1).fetch_table(COLUMN_TABLE, progress=False).to_parquet(table, index=False)
    capsys.readouterr()
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 2       # guards against: 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(table) in err and "checksum" in err


# -- the sources by name -------------------------------------------------------------------------
def test_every_source_is_made_by_name_from_one_registry(tmp_path):
    from connectomics.build import DEFAULT_SOURCES, build_default_graph, graph_folder
    from connectomics.sources import SOURCES, make_source
    from connectomics.sources.volume import synthetic_cell_table

    assert list(SOURCES) == ["column", "surrogate", "cave", "snapshot", "volume"]
    (tmp_path / "snap").mkdir()
    synthetic_cell_table(50).to_csv(tmp_path / "cells.csv", index=False)
    options = {"column": {}, "surrogate": {"seed": 2}, "cave": {"version": 943},
               "snapshot": {"path": str(tmp_path / "snap"), "version": 7},
               "volume": {"path": str(tmp_path / "cells.csv"), "fraction": 0.5}}
    made = {kind: make_source(kind, **kw) for kind, kw in options.items()}
    assert {kind: s.kind for kind, s in made.items()} == {kind: kind for kind in SOURCES}
    assert (made["surrogate"].seed, made["cave"].version, made["snapshot"].version) == (2, 943, 7)
    assert made["volume"].fraction == 0.5
    with pytest.raises(ValueError, match="unknown source 'x': use column, surrogate, cave, snapshot, volume"):
        make_source("x")
    with pytest.raises(ValueError, match="needs a PATH"):
        make_source("snapshot")
    with pytest.raises(ValueError, match="--resolution is for --source snapshot"):
        make_source("column", resolution_nm=(1, 1, 1))
    # the default graph: the same sources, the same folder as build_graph's
    assert DEFAULT_SOURCES == ("column", "surrogate")
    g = build_default_graph(tmp_path / "cache", seed=2, source="surrogate")
    assert load_graph(graph_folder(made["surrogate"], tmp_path / "cache")).checksum() == g.checksum()
    with pytest.raises(ValueError, match="use column or surrogate"):
        build_default_graph(tmp_path / "cache", source="cave")
