"""SONATA export read back by real readers: libsonata (nodes, edges, attributes, indices, circuit
config) and BMTK; sort order, missing values, chunked writing and its memory, the CLI."""

from __future__ import annotations

import json
import shutil
import tracemalloc

import h5py
import numpy as np
import pandas as pd
import pytest

from connectomics.export import to_sonata
from connectomics.export.sonata import (
    EXCITATORY_EDGE_TYPE, INHIBITORY_EDGE_TYPE, MISSING_INT, NODE_TYPE_ID_BASE, SONATA_MAGIC,
)
from connectomics.graph import ConnectomeGraph

libsonata = pytest.importorskip("libsonata", reason="libsonata (dev extra) reads the export back")

POP, EPOP = "microns", "microns_to_microns"


@pytest.fixture(scope="module")
def graph(surrogate_graph) -> ConnectomeGraph:
    return surrogate_graph.graph


@pytest.fixture(scope="module")
def export(graph, tmp_path_factory):
    return to_sonata(graph, tmp_path_factory.mktemp("sonata") / "circuit", chunk_edges=10_000)


@pytest.fixture(scope="module")
def nodes_pop(export):
    return libsonata.NodeStorage(str(export.files["nodes"])).open_population(POP)


@pytest.fixture(scope="module")
def edges_pop(export):
    return libsonata.EdgeStorage(str(export.files["edges"])).open_population(EPOP)


def _sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


def test_files_and_root_attributes(export):
    assert sorted(p.name for p in export.folder.iterdir()) == [
        "circuit_config.json", "edge_types.csv", "edges.h5", "node_types.csv", "nodes.h5"]
    for name in ("nodes", "edges"):
        with h5py.File(export.files[name]) as h5:
            assert h5.attrs["version"].tolist() == [0, 1]
            assert int(h5.attrs["magic"]) == SONATA_MAGIC


def test_population_sizes_and_names(export, graph, nodes_pop, edges_pop):
    assert libsonata.NodeStorage(str(export.files["nodes"])).population_names == {POP}
    assert libsonata.EdgeStorage(str(export.files["edges"])).population_names == {EPOP}
    assert nodes_pop.size == graph.n_nodes == export.n_nodes
    assert edges_pop.size == len(graph.edges) == export.n_edges
    assert edges_pop.source == POP and edges_pop.target == POP


def test_node_attributes_of_a_sample(graph, nodes_pop, export):
    ids = _sample(graph.n_nodes, 60)
    sel = libsonata.Selection(ids)
    n = graph.nodes.iloc[ids]
    assert nodes_pop.attribute_names == {"cell_type", "mtype", "layer", "ei", "root_id", "nucleus_id",
                                         "x", "y", "z", "depth_um"}
    for attr in ("cell_type", "mtype", "layer", "ei"):
        assert nodes_pop.get_attribute(attr, sel).tolist() == n[attr].tolist(), attr
    for attr in ("root_id", "nucleus_id"):
        np.testing.assert_array_equal(nodes_pop.get_attribute(attr, sel), n[attr].to_numpy())
    for attr in "xyz":
        np.testing.assert_allclose(nodes_pop.get_attribute(attr, sel), n[f"{attr}_nm"].to_numpy() / 1000)
    np.testing.assert_allclose(nodes_pop.get_attribute("depth_um", sel), n["depth_um"].to_numpy())
    # node type: one per population, with the population's name, type and layer
    types = pd.read_csv(export.files["node_types"], sep=" ").set_index("node_type_id")
    with h5py.File(export.files["nodes"]) as h5:
        type_ids = h5[f"nodes/{POP}/node_type_id"][...][ids]
        np.testing.assert_array_equal(h5[f"nodes/{POP}/node_group_index"][...], np.arange(graph.n_nodes))
    assert types.loc[type_ids, "pop_name"].tolist() == (n["cell_type"] + "|" + n["layer"]).tolist()
    assert len(types) == graph.type_graph.number_of_nodes()
    assert types.index.min() == NODE_TYPE_ID_BASE
    assert set(types["model_type"]) == {"point_neuron"}


def test_edge_attributes_of_a_sample(graph, edges_pop, export):
    ids = _sample(edges_pop.size, 300, seed=1)
    sel = libsonata.Selection(ids)
    src = edges_pop.source_nodes(sel)
    tgt = edges_pop.target_nodes(sel)
    by_pair = graph.edges.set_index(["pre", "post"])
    row = by_pair.loc[list(zip(src.tolist(), tgt.tolist()))]
    assert edges_pop.attribute_names == {"nsyns", "summed_size"}
    np.testing.assert_array_equal(edges_pop.get_attribute("nsyns", sel), row["n_synapses"].to_numpy())
    np.testing.assert_allclose(edges_pop.get_attribute("summed_size", sel), row["summed_size"].to_numpy())
    # the edge type carries the presynaptic sign
    types = pd.read_csv(export.files["edge_types"], sep=" ").set_index("edge_type_id")
    with h5py.File(export.files["edges"]) as h5:
        type_ids = h5[f"edges/{EPOP}/edge_type_id"][...][ids]
    pre_ei = graph.nodes["ei"].to_numpy()[src]
    assert types.loc[type_ids, "pre_ei"].tolist() == pre_ei.tolist()
    assert types.loc[type_ids, "synapse_class"].tolist() == [
        "inhibitory" if e == "I" else "excitatory" for e in pre_ei]
    assert types.loc[[EXCITATORY_EDGE_TYPE, INHIBITORY_EDGE_TYPE], "sign"].tolist() == [1, -1]
    assert set(pre_ei) == {"E", "I"}           # the sample exercises both signs


def test_edges_sorted_by_target_then_source(export, graph):
    with h5py.File(export.files["edges"]) as h5:
        src = h5[f"edges/{EPOP}/source_node_id"][...]
        tgt = h5[f"edges/{EPOP}/target_node_id"][...]
        assert h5[f"edges/{EPOP}/source_node_id"].attrs["node_population"] == POP
        assert h5[f"edges/{EPOP}/target_node_id"].attrs["node_population"] == POP
        np.testing.assert_array_equal(h5[f"edges/{EPOP}/edge_group_index"][...], np.arange(len(src)))
    key = tgt * graph.n_nodes + src
    assert np.all(np.diff(key) > 0)
    assert set(zip(src.tolist(), tgt.tolist())) == set(zip(graph.edges["pre"], graph.edges["post"]))


def test_afferent_and_efferent_lookups_match_the_graph(graph, edges_pop):
    e = graph.edges
    for node in _sample(graph.n_nodes, 40, seed=2).tolist():
        aff = edges_pop.afferent_edges([node])
        assert sorted(edges_pop.source_nodes(aff).tolist()) == sorted(e.loc[e["post"] == node, "pre"].tolist())
        eff = edges_pop.efferent_edges([node])
        assert sorted(edges_pop.target_nodes(eff).tolist()) == sorted(e.loc[e["pre"] == node, "post"].tolist())
    nodes = [0, 5, 17]
    assert edges_pop.afferent_edges(nodes).flat_size == int(e["post"].isin(nodes).sum())


def test_indices_equal_libsonatas_own_writer(export, graph, tmp_path):
    """The index groups are byte-for-byte what libsonata.EdgePopulation.write_indices writes."""
    copy = tmp_path / "edges.h5"
    shutil.copy(export.files["edges"], copy)
    with h5py.File(copy, "a") as h5:
        del h5[f"edges/{EPOP}/indices"]
    libsonata.EdgePopulation.write_indices(str(copy), EPOP, graph.n_nodes, graph.n_nodes)
    with h5py.File(copy) as ref, h5py.File(export.files["edges"]) as ours:
        for grp in ("source_to_target", "target_to_source"):
            for ds in ("node_id_to_ranges", "range_to_edge_id"):
                a = ref[f"edges/{EPOP}/indices/{grp}/{ds}"][...]
                b = ours[f"edges/{EPOP}/indices/{grp}/{ds}"][...]
                assert a.dtype == b.dtype and np.array_equal(a, b), (grp, ds)
            np.testing.assert_array_equal(ours[f"edges/{EPOP}/indices/{grp}/node_id_to_range"][...],
                                          ours[f"edges/{EPOP}/indices/{grp}/node_id_to_ranges"][...])


def test_circuit_config_read_by_libsonata(export):
    cfg = libsonata.CircuitConfig.from_file(str(export.config))
    assert cfg.node_populations == {POP} and cfg.edge_populations == {EPOP}
    assert cfg.node_population_properties(POP).elements_path == str(export.files["nodes"].resolve())
    assert cfg.edge_population_properties(EPOP).elements_path == str(export.files["edges"].resolve())
    assert cfg.node_population(POP).size == export.n_nodes
    assert cfg.edge_population(EPOP).size == export.n_edges


def test_bmtk_reads_the_network(export, graph, monkeypatch):
    pytest.importorskip("bmtk", reason="bmtk is in the dev extra (pip install -e .[dev])")
    from bmtk.utils import sonata
    from bmtk.utils.sonata.config import SonataConfig

    monkeypatch.chdir(export.folder)          # BMTK resolves relative paths from the working folder
    cfg = SonataConfig.from_json("circuit_config.json")
    nets = cfg["networks"]
    net = sonata.File(data_files=[nets["nodes"][0]["nodes_file"], nets["edges"][0]["edges_file"]],
                      data_type_files=[nets["nodes"][0]["node_types_file"], nets["edges"][0]["edge_types_file"]])
    nodes, edges = net.nodes[POP], net.edges[EPOP]
    assert len(nodes) == graph.n_nodes and len(edges) == len(graph.edges)
    node = nodes.get_node_id(7)
    assert node["pop_name"] == f"{graph.nodes['cell_type'][7]}|{graph.nodes['layer'][7]}"
    e = graph.edges
    target = int(e["post"].iloc[0])
    got = sorted((x.source_node_id, x["nsyns"], x["synapse_class"]) for x in edges.get_target(target))
    ei = graph.nodes["ei"].to_numpy()
    want = sorted((int(r.pre), int(r.n_synapses), "inhibitory" if ei[r.pre] == "I" else "excitatory")
                  for r in e[e["post"] == target].itertuples())
    assert got == want
    assert len(list(edges.get_source(target))) == int((e["pre"] == target).sum())


def _tiny_graph(summed_size, n_synapses=(3, 1, 2)) -> ConnectomeGraph:
    nodes = pd.DataFrame({
        "root_id": [11, 12, 13], "nucleus_id": [5.0, np.nan, 7.0], "cell_type": ["23P", "BC", "4P"],
        "mtype": ["L2a", None, np.nan], "layer": ["L2/3", "L4", "L4"], "ei": ["E", "I", "E"],
        "x_nm": [1000.0, 2000.0, 3000.0], "y_nm": [0.0, 1.0, 2.0], "z_nm": [5.0, 6.0, 7.0],
        "depth_um": [100.0, 300.0, 320.0],
    })
    edges = pd.DataFrame({"pre": [0, 1, 2], "post": [1, 2, 0], "pre_root_id": [11, 12, 13],
                          "post_root_id": [12, 13, 11], "n_synapses": list(n_synapses),
                          "summed_size": list(summed_size)})
    return ConnectomeGraph(nodes=nodes, edges=edges)


def test_missing_values_are_written_as_documented(tmp_path):
    res = to_sonata(_tiny_graph([10.0, np.nan, 30.0]), tmp_path / "c")
    pop = libsonata.NodeStorage(str(res.files["nodes"])).open_population(POP)
    sel = pop.select_all()
    assert pop.get_attribute("nucleus_id", sel).tolist() == [5, MISSING_INT, 7]
    assert pop.get_attribute("mtype", sel).tolist() == ["L2a", "", ""]
    ep = libsonata.EdgeStorage(str(res.files["edges"])).open_population(EPOP)
    order = ep.target_nodes(ep.select_all()).tolist()
    assert order == [0, 1, 2]                  # sorted by target: edges 2->0, 0->1, 1->2
    size = ep.get_attribute("summed_size", ep.select_all())
    assert size[0] == 30.0 and size[1] == 10.0 and np.isnan(size[2])
    # no sizes at all (e.g. a connectome given as counts only): the attribute is left out
    res = to_sonata(_tiny_graph([np.nan] * 3, n_synapses=[3.0, np.nan, 2.0]), tmp_path / "d")
    ep = libsonata.EdgeStorage(str(res.files["edges"])).open_population(EPOP)
    assert ep.attribute_names == {"nsyns"}
    nsyns = ep.get_attribute("nsyns", ep.select_all())
    assert nsyns[0] == 2.0 and nsyns[1] == 3.0 and np.isnan(nsyns[2])


def test_chunk_size_does_not_change_the_files(graph, export, tmp_path):
    small = to_sonata(graph, tmp_path / "c", chunk_edges=997)
    with h5py.File(small.files["edges"]) as a, h5py.File(export.files["edges"]) as b:
        names: list[str] = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        assert len(names) == 11      # 7 edge datasets + 2 per index group (the links are one object)
        for n in names:
            assert np.array_equal(a[n][...], b[n][...]), n


def test_edge_memory_is_bounded(tmp_path):
    """Peak traced memory stays under one sorted copy of the edge table (48 bytes/edge): the export
    holds the sort order and the source runs (~24 bytes/edge) plus one chunk (measured 26.5)."""
    rng = np.random.default_rng(0)
    n, e = 3000, 400_000
    pairs = rng.choice(n * n, size=e, replace=False)
    pre, post = np.divmod(pairs, n)
    nodes = pd.DataFrame({
        "root_id": np.arange(n) + 10**17, "nucleus_id": np.arange(n), "cell_type": "23P", "mtype": "L2a",
        "layer": "L2/3", "ei": "E", "x_nm": 0.0, "y_nm": 0.0, "z_nm": 0.0, "depth_um": 0.0})
    edges = pd.DataFrame({"pre": pre, "post": post, "pre_root_id": pre, "post_root_id": post,
                          "n_synapses": rng.integers(1, 5, e), "summed_size": rng.random(e)})
    g = ConnectomeGraph(nodes=nodes, edges=edges)
    tracemalloc.start()
    try:
        res = to_sonata(g, tmp_path / "c", chunk_edges=20_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.n_edges == e
    assert peak < 30 * e, f"peak {peak / e:.1f} bytes per edge"


def test_volume_scale_graph_exports(tmp_path):
    """A graph built by the volume source (its own synthetic ids and inhibitory cells)."""
    from connectomics.build import build_graph
    from connectomics.sources.volume import VolumeSource, synthetic_cell_table

    source = VolumeSource(synthetic_cell_table(1200, seed=3), seed=1, fraction=0.5)
    g = build_graph(source, tmp_path / "cache", engine="local", out=tmp_path / "graph",
                          progress=False).graph
    res = to_sonata(g, tmp_path / "circuit", chunk_edges=1000)
    ep = libsonata.EdgeStorage(str(res.files["edges"])).open_population(EPOP)
    assert ep.size == len(g.edges) > 1000
    node = int(g.edges["post"].iloc[len(g.edges) // 2])
    aff = ep.afferent_edges([node])
    assert sorted(ep.source_nodes(aff).tolist()) == sorted(g.edges.loc[g.edges["post"] == node, "pre"])


def test_bad_population_name(graph, tmp_path):
    with pytest.raises(ValueError, match="population name"):
        to_sonata(graph, tmp_path, population="a/b")


def test_cli_writes_the_circuit(surrogate_graph, tmp_path, capsys):
    from pipelines.export import main

    assert main(["sonata", "--out", str(tmp_path / "c"), "--graph", str(surrogate_graph.folder)]) == 0
    out = capsys.readouterr().out
    assert f"{surrogate_graph.graph.n_nodes} nodes" in out and "edges.h5" in out
    cfg = json.loads((tmp_path / "c" / "circuit_config.json").read_text())
    assert cfg["networks"]["edges"][0]["populations"] == {EPOP: {"type": "chemical"}}


def test_cli_error_is_one_line(tmp_path, capsys):
    from pipelines.export import main

    assert main(["sonata", "--out", str(tmp_path / "c"), "--graph", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("export: error:") and "nodes.parquet" in err and "\n" not in err
