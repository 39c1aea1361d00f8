"""The real MICrONS V1 column: the bundled snapshot, its source, the graph it gives and
the paper's column compiled on it. Figures from ``../shared/.../v1_column_connectome/SOURCE.md``."""

from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from connectomics.graph import load_graph
from connectomics.sources.column import SNAPSHOT_DIR, ColumnSource, SnapshotIntegrityError, load_column_snapshot
from graphnet import ColumnSpec, compile_column
from graphnet.inhibition import inhibitory_input
from graphnet.null_models import degree_shuffle, label_shuffle, random_graph
from tests.helpers import shared_path

REPO = Path(__file__).resolve().parents[1]
INHIBITORY = {"BC", "MC", "BPC", "NGC", "Unsure I"}


def test_cells_synapses_pairs_and_signs(column_graph):
    g = column_graph.graph
    assert g.n_nodes == 1351 and g.nodes["root_id"].is_unique
    e = g.edges
    assert int(e["n_synapses"].sum()) == 141_452 and len(e) == 75_251
    assert not (e["pre"] == e["post"]).any()  # no autapses
    ei = g.nodes["ei"].to_numpy()
    by_sign = e.groupby([ei[e["pre"]], ei[e["post"]]])["n_synapses"].sum().to_dict()
    assert by_sign == {("E", "E"): 32_974, ("E", "I"): 26_953, ("I", "E"): 72_189, ("I", "I"): 9_336}
    assert g.nodes["cell_type"].value_counts().to_dict() == {
        "23P": 349, "4P": 266, "6P-IT": 192, "6P-CT": 143, "5P-IT": 137, "BC": 59, "MC": 41,
        "5P-ET": 38, "BPC": 33, "6P-U": 28, "WM-P": 20, "NGC": 17, "Unsure I": 13, "5P-NP": 10,
        "Unsure E": 5}
    assert set(g.nodes.loc[g.nodes["ei"] == "I", "cell_type"]) == INHIBITORY


def test_synapse_sizes_are_missing_not_invented(column_graph):
    g = column_graph.graph
    assert g.edges["summed_size"].isna().all()
    assert g.meta["n_edges_without_size"] == 75_251 and g.meta["source"] == "column"
    assert all(np.isnan(d["summed_size"]) for *_, d in g.type_graph.edges(data=True))
    again = load_graph(column_graph.folder)  # and the files say so too
    assert again.edges["summed_size"].isna().all()
    assert sum(d["connected_pairs"] for *_, d in again.type_graph.edges(data=True)) == 75_251
    with pytest.raises(ValueError, match="unknown synapse size"):
        compile_column(g, ColumnSpec.bionic(weight_init="summed_size"), in_features=8)


def test_bionic_layers_are_the_papers_and_the_column_runs(column_graph):
    g = column_graph.graph
    col = compile_column(g, ColumnSpec.bionic(), in_features=16)
    assert {k: l.size for k, l in col.layers.items()} == {"A": 266, "B": 349, "C": 185, "D": 383}
    units = np.concatenate([col.layer_plans[k].unit_ids for k in "ABCD"])
    assert not g.nodes.loc[units, "cell_type"].str.startswith("Unsure").any()
    assert (g.nodes.loc[units, "ei"] == "E").all()
    with torch.no_grad():
        y = col(torch.randn(4, 16))
    assert y.shape == (4, 383) and bool(torch.isfinite(y).all())


def test_graded_inhibition_is_each_cells_real_inhibitory_input(column_graph):
    """Recomputed from the snapshot's own connection table: synapses from BC/MC/BPC/NGC/Unsure I."""
    g = column_graph.graph
    snap = load_column_snapshot()
    itype = snap.cells.set_index("nucleus_id")["cell_type"]
    conn = snap.connections[snap.connections["pre_nucleus_id"].map(itype).isin(INHIBITORY)]
    per_nucleus = conn.groupby("post_nucleus_id")["n_synapses"].sum()
    col = compile_column(g, ColumnSpec.bionic(inhibition_strength=0.5), in_features=8)
    for name in "ABCD":
        units = col.layer_plans[name].unit_ids
        c = g.nodes.loc[units, "nucleus_id"].map(per_nucleus).fillna(0).to_numpy(float)
        assert c.max() > 0
        np.testing.assert_allclose(inhibitory_input(g, units), c)
        gain = col.layers[name].inhibition.gain.double().numpy()
        np.testing.assert_allclose(gain, 1 - 0.5 * c / c.max(), rtol=1e-6)


@pytest.mark.parametrize("null", [random_graph, degree_shuffle, label_shuffle])
def test_null_models_run_on_the_real_column(column_graph, null):
    g = column_graph.graph
    h = null(g, seed=1)
    assert len(h.edges) == len(g.edges) and h.n_nodes == g.n_nodes
    assert int(h.edges["n_synapses"].sum()) == 141_452
    assert not h.edges[["pre", "post"]].equals(g.edges[["pre", "post"]]) or null is label_shuffle
    if null is degree_shuffle:  # every cell keeps its degrees
        for end in ("pre", "post"):
            assert np.array_equal(np.bincount(h.edges[end], minlength=g.n_nodes),
                                  np.bincount(g.edges[end], minlength=g.n_nodes))
    if null is label_shuffle:
        assert not h.nodes["cell_type"].equals(g.nodes["cell_type"])
    mask = {random_graph: "random", degree_shuffle: "degree_shuffle", label_shuffle: "label_shuffle"}[null]
    col = compile_column(g, ColumnSpec.bionic(mask=mask, seed=1), in_features=8)
    with torch.no_grad():
        assert bool(torch.isfinite(col(torch.randn(2, 8))).all())


def test_tampered_snapshot_file_is_refused_with_its_name(tmp_path):
    folder = tmp_path / "v1_column"
    shutil.copytree(SNAPSHOT_DIR, folder)
    ColumnSource(folder)  # intact copy: fine
    data = bytearray((folder / "connections.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "connections.parquet").write_bytes(bytes(data))
    with pytest.raises(SnapshotIntegrityError,
                       match=r"connections\.parquet: checksum .* does not match manifest\.json"):
        ColumnSource(folder)
    (folder / "connections.parquet").unlink()
    with pytest.raises(SnapshotIntegrityError, match=r"connections\.parquet: missing"):
        load_column_snapshot(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotIntegrityError, match=r"manifest\.json: not a valid snapshot manifest"):
        load_column_snapshot(folder)


def test_snapshot_is_small_and_ships_as_package_data():
    files = sorted(p.name for p in SNAPSHOT_DIR.iterdir())
    assert files == ["README.md", "cells.parquet", "connections.parquet", "manifest.json"]
    assert sum(p.stat().st_size for p in SNAPSHOT_DIR.iterdir()) < 1_000_000
    import fnmatch
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["connectomics"]
    for f in files:   # every snapshot file is matched by a package-data glob, so it ships
        assert any(fnmatch.fnmatch(f"data/v1_column/{f}", g) for g in globs), f
    m = load_column_snapshot().manifest
    assert "MICrONS Consortium" in " ".join(m["citation"]) and "Schneider-Mizell" in " ".join(m["citation"])
    assert m["inputs"]["network_synapses_matrix.npz"]["commit"] == "d64aca4de54755d11d18225cd422efe6adff8613"


def test_snapshot_is_rederived_byte_for_byte(tmp_path):
    shared = shared_path("microns", "v1_column_connectome")
    spec = importlib.util.spec_from_file_location("make_column_snapshot", REPO / "scripts" / "make_column_snapshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    manifest = mod.make_snapshot(shared, tmp_path)
    for name in ("cells.parquet", "connections.parquet"):  # the same data whatever the writer
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / name), pd.read_parquet(SNAPSHOT_DIR / name))
    writer = load_column_snapshot().manifest["writer"]["pyarrow"]
    if manifest["writer"]["pyarrow"] != writer:
        pytest.skip(f"bytes compared only with the pyarrow that wrote the snapshot ({writer}; "
                    f"here {manifest['writer']['pyarrow']}); the contents match")
    for name in ("cells.parquet", "connections.parquet", "README.md", "manifest.json"):
        assert (tmp_path / name).read_bytes() == (SNAPSHOT_DIR / name).read_bytes(), name


def test_default_build_graph_cli_builds_the_real_column_offline(tmp_path, monkeypatch, capsys):
    from pipelines import build_graph as cli

    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert cli.main(["--cache", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "source: column" in out and "cells: 1351  (1188 E, 163 I)" in out
    assert "synapses: 141452  connected pairs: 75251" in out
    (graph_dir,) = tmp_path.glob("v1_column-*/v1/graph")
    assert len(load_graph(graph_dir).nodes) == 1351


def test_size_plot_says_sizes_are_unknown_instead_of_drawing_zeros(column_graph, surrogate_graph):
    import matplotlib.pyplot as plt

    from connectomics import plots

    fig = plots.connectivity_matrix(column_graph.graph, "summed_size", by="cell_type")
    ax = fig.axes[0]
    assert [t.get_gid() for t in ax.texts if t.get_gid()] == ["sizes-unknown"]
    assert np.isnan(np.asarray(ax.images[0].get_array(), dtype=float)).all()
    plt.close(fig)
    fig = plots.connectivity_matrix(surrogate_graph.graph, "summed_size", by="cell_type")
    assert "sizes-unknown" not in [t.get_gid() for t in fig.axes[0].texts]
    plt.close(fig)


def test_bionic_still_compiles_on_the_surrogate(surrogate_graph):
    """The surrogate (census fitted to the real column) has the real column's type counts."""
    col = compile_column(surrogate_graph.graph, ColumnSpec.bionic(), in_features=8)
    assert {k: l.size for k, l in col.layers.items()} == {"A": 266, "B": 349, "C": 185, "D": 383}
    with torch.no_grad():
        assert col(torch.randn(2, 8)).shape == (2, 383)


def test_paper_preset_is_wired_by_the_real_column(column_graph):
    from dataclasses import replace

    from pipelines.config import PRESETS, Config
    from pipelines.models import build_model

    cfg = replace(Config(), **PRESETS["paper"])
    assert cfg.graph == "" and cfg.graph_source == "column"
    model = build_model(cfg, column_graph.graph)
    assert model.column.out_features == 383
    assert {k: l.size for k, l in model.column.layers.items()} == {"A": 266, "B": 349, "C": 185, "D": 383}
    with torch.no_grad():
        assert model(torch.randn(2, 1, 48, 48)).shape == (2, 7)
