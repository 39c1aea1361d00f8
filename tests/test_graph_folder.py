"""A graph folder is written whole or not at all, and ``load_graph`` refuses one that mixes two
graphs: counts and checksum in ``meta.json`` are checked against the files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import connectomics.graph as graph_module
from connectomics import load_graph
from connectomics.build import build_default_graph
from connectomics.cache import CacheError

from graphnet.testing import synthetic_graph

from .helpers import small_graph


def test_a_crash_while_replacing_a_graph_folder_leaves_the_old_graph(tmp_path, monkeypatch):
    old, new = small_graph(seed=0), synthetic_graph({("4P", "L4"): 30, ("BC", "L4"): 4}, seed=1)
    folder = tmp_path / "graph"
    old.save(folder)
    real = graph_module.write_parquet_atomic

    def dies_on_edges(df, path):
        if path.name == "edges.parquet":
            raise KeyboardInterrupt   # killed after nodes.parquet of the new graph was written
        real(df, path)

    monkeypatch.setattr(graph_module, "write_parquet_atomic", dies_on_edges)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.undo()
    got = load_graph(folder)
    assert got.checksum() == old.checksum()            # guards against: new nodes beside the old edges
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph"]   # no temporary folder left
    new.save(folder)                                   # a complete save replaces it
    assert load_graph(folder).checksum() == new.checksum()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph"]


def test_load_graph_refuses_files_of_two_graphs(tmp_path):
    a, b = small_graph(seed=0), small_graph(seed=3)
    assert len(a.nodes) == len(b.nodes) and len(a.edges) != len(b.edges)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    (tmp_path / "a" / "edges.parquet").write_bytes((tmp_path / "b" / "edges.parquet").read_bytes())
    with pytest.raises(CacheError, match=r"a: .*edges.*meta\.json"):
        load_graph(tmp_path / "a")

    # same counts, other values: only the checksum tells
    c = small_graph(seed=0)
    c.edges["n_synapses"] = c.edges["n_synapses"] + 1
    c.save(tmp_path / "c")
    (tmp_path / "a" / "edges.parquet").write_bytes((tmp_path / "c" / "edges.parquet").read_bytes())
    with pytest.raises(CacheError, match=r"checksum .* meta\.json"):
        load_graph(tmp_path / "a")


def test_meta_json_records_counts_and_checksum_and_folders_without_them_load(tmp_path):
    g = small_graph()
    g.save(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert (meta["n_nodes"], meta["n_edges"], meta["checksum"]) == (g.n_nodes, len(g.edges), g.checksum())
    assert "checksum" not in g.meta        # the graph in memory is not changed by saving it
    for key in ("n_nodes", "n_edges", "checksum"):   # a meta.json without them loads unchecked
        del meta[key]
    (tmp_path / "g" / "meta.json").write_text(json.dumps(meta))
    pd.testing.assert_frame_equal(load_graph(tmp_path / "g").edges, g.edges)


@pytest.mark.parametrize("text", ["[]", "{", '"x"'])
def test_a_damaged_meta_json_is_named(tmp_path, text):
    small_graph().save(tmp_path / "g")
    (tmp_path / "g" / "meta.json").write_text(text)
    with pytest.raises(CacheError, match="meta.json"):
        load_graph(tmp_path / "g")


def test_save_refuses_to_replace_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        small_graph().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncate edges", "swap nodes", "drop meta"])
def test_build_default_graph_rebuilds_a_damaged_default_graph(tmp_path, column_graph, damage):
    folder = build_default_graph(tmp_path) and next(tmp_path.glob("v1_column-*/v1/graph"))
    if damage == "truncate edges":
        data = (folder / "edges.parquet").read_bytes()
        (folder / "edges.parquet").write_bytes(data[: len(data) // 2])
    elif damage == "swap nodes":
        small_graph().nodes.to_parquet(folder / "nodes.parquet", index=False)
    else:
        (folder / "meta.json").write_text("[")
    with pytest.raises(CacheError):
        load_graph(folder)
    g = build_default_graph(tmp_path)                 # guards against: traces back
    assert g.checksum() == column_graph.graph.checksum()
    assert load_graph(folder).checksum() == column_graph.graph.checksum()


def test_build_default_graph_makes_damaged_tables_again(tmp_path, column_graph):
    build_default_graph(tmp_path)
    folder = next(tmp_path.glob("v1_column-*/v1/graph"))
    (folder / "meta.json").write_text("[")
    table = next(folder.parent.glob("nucleus_detection_v0.parquet"))
    table.write_bytes(table.read_bytes()[:100])
    assert build_default_graph(tmp_path).checksum() == column_graph.graph.checksum()
