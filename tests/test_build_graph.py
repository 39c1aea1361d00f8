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
from connectomics.schema import COLUMN_TABLES, SYNAPSE_TABLE
from connectomics.sources.surrogate import SurrogateSource
from pipelines import build_graph as cli


def test_cli_builds_graph_and_reuses_cache(tmp_path, capsys, monkeypatch):
    assert cli.main(["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cells: 1351  (1188 E, 163 I)" in out and "pulled" in out
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
    assert code == 1
    assert not (tmp_path / "c" / "snapshot-minnie65_public" / "v1300" / f"{COLUMN_TABLES[0]}.parquet").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["--source", "snapshot", str(tmp_path / "missing"), "--cache", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a folder" in err
    with pytest.raises(SystemExit):
        cli.main(["--source", "snapshot"])
