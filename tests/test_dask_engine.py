"""Dask engine == local engine, bit for bit, on a LocalCluster of 2 worker processes; the
``build_graph --engine dask --scheduler`` CLI; partitions generated on the workers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest




from connectomics.build import build_graph  # noqa: E402
from connectomics.atomic_io import sha256_of  # noqa: E402
from connectomics.cache import TableCache  # noqa: E402
from connectomics.dask_engine import aggregate_dask, aggregate_local, merge_partials, partial_edges  # noqa: E402
from connectomics.graph import type_graph, type_tables  # noqa: E402
from connectomics.schema import SYNAPSE_TABLE  # noqa: E402
from connectomics.sources.volume import VolumeSource, synthetic_cell_table  # noqa: E402
from pipelines import build_graph as cli  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        yield lc, client


@pytest.fixture(scope="module")
def cells_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.csv"
    synthetic_cell_table(2400, seed=1).to_csv(path)
    return path


@pytest.fixture(scope="module")
def local_build(tmp_path_factory, cells_csv):
    root = tmp_path_factory.mktemp("local")
    src = VolumeSource(cells_csv, seed=3, fraction=0.6, partition_cells=200)
    return build_graph(src, root, engine="local", progress=False)


def _random_partitions(tmp_path, rng, n_cells=300, n_files=6, rows=4000):
    roots = np.sort(rng.choice(10**12, n_cells, replace=False)).astype(np.int64)
    pool = np.concatenate([roots, rng.integers(10**12, 2 * 10**12, 60)])   # some ids outside
    files = []
    for i in range(n_files):
        n = int(rng.integers(0, rows)) if i else 0          # the first file is empty
        t = pa.table({"id": np.arange(n, dtype=np.int64), "pre_pt_root_id": rng.choice(pool, n),
                      "post_pt_root_id": rng.choice(pool, n), "size": rng.integers(1, 10**6, n)})
        files.append(tmp_path / f"part-{i:05d}.parquet")
        pq.write_table(t, files[-1], row_group_size=1000)
    return roots, files


@pytest.mark.parametrize("split_every", [2, 8])
def test_dask_equals_local_on_overlapping_partitions(tmp_path, cluster, split_every):
    """Pairs recur across files (unlike the volume's pre-cell blocks), ids outside the node set."""
    roots, files = _random_partitions(tmp_path, np.random.default_rng(split_every))
    local = aggregate_local(files, roots)                         # dense mode (300 nodes)
    dask = aggregate_dask(files, roots, cluster[1], split_every=split_every)
    assert len(local) > 1000 and local["n_synapses"].max() > 1
    pd.testing.assert_frame_equal(dask, local, check_exact=True)


def test_partial_reduction_is_associative():
    rng = np.random.default_rng(0)
    roots = np.arange(50, dtype=np.int64) * 7
    syn = pd.DataFrame({"pre_pt_root_id": rng.choice(roots, 5000), "post_pt_root_id": rng.choice(roots, 5000),
                        "size": rng.integers(1, 100, 5000)})
    parts = [partial_edges(syn.iloc[i:i + 700], roots) for i in range(0, 5000, 700)]
    one = partial_edges(syn, roots)
    pd.testing.assert_frame_equal(merge_partials(roots, *parts), one, check_exact=True)
    pd.testing.assert_frame_equal(
        merge_partials(roots, merge_partials(roots, *parts[:3]), merge_partials(roots, *parts[3:])), one)


def test_volume_build_dask_equals_local(tmp_path, cluster, local_build, cells_csv):
    """Full build on the cluster (synapse partitions drawn on the workers, then aggregated)."""
    lc, _ = cluster
    src = VolumeSource(cells_csv, seed=3, fraction=0.6, partition_cells=200)
    res = build_graph(src, tmp_path, engine="dask", scheduler=lc.scheduler_address, progress=False)
    a, b = local_build.graph, res.graph
    assert a.meta["n_synapses"] > 20_000 and a.meta["synapse_files"] >= 4
    pd.testing.assert_frame_equal(b.nodes, a.nodes, check_exact=True)
    pd.testing.assert_frame_equal(b.edges, a.edges, check_exact=True)
    for x, y in zip(type_tables(b.type_graph), type_tables(a.type_graph)):
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    # the same partition files, drawn here or on the workers
    assert [sha256_of(f) for f in res.cache.partition_files(SYNAPSE_TABLE)] == \
        [sha256_of(f) for f in local_build.cache.partition_files(SYNAPSE_TABLE)]
    # and the files on disk agree
    for name in ("edges.parquet", "type_edges.parquet", "nodes.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(res.folder / name), pd.read_parquet(local_build.folder / name))
    meta = json.loads((res.folder / "meta.json").read_text())
    assert meta["engine"] == "dask" and meta["timings"]["worker_peak_mb"] > 0


def test_dask_engine_on_a_single_file_source(tmp_path, cluster, surrogate_graph):
    """--engine dask also works for the other sources (one synapses_pni_2.parquet)."""
    from connectomics.sources.surrogate import SurrogateSource

    res = build_graph(SurrogateSource(0), tmp_path, engine="dask",
                            scheduler=cluster[0].scheduler_address, progress=False)
    pd.testing.assert_frame_equal(res.graph.edges, surrogate_graph.graph.edges, check_exact=True)
    ref = type_graph(surrogate_graph.graph.nodes, surrogate_graph.graph.edges)
    assert sorted(res.graph.type_graph.edges(data=True)) == sorted(ref.edges(data=True))


def test_cli_volume_dask_with_scheduler(tmp_path, cluster, local_build, cells_csv, capsys):
    code = cli.main(["--source", "volume", "--cells", str(cells_csv), "--fraction", "0.6", "--seed", "3",
                     "--engine", "dask", "--scheduler", cluster[0].scheduler_address,
                     "--cache", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"cells: {local_build.graph.n_nodes}" in out and "source: volume" in out
    edges = pd.read_parquet(tmp_path / "volume" / local_build.cache.dir.name / "graph" / "edges.parquet")
    pd.testing.assert_frame_equal(edges, local_build.graph.edges, check_exact=True)
    manifest = json.loads((local_build.cache.dir / "manifest.json").read_text())
    assert manifest["synapses_pni_2"]["partitioned"] and manifest["synapses_pni_2"]["source"] == "volume"


def test_cli_argument_errors(capsys):
    for argv in (["--source", "volume"], ["--cells", "x.csv"], ["--scheduler", "tcp://x:1"],
                 ["--engine", "spark"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    assert cli.main(["--source", "volume", "--cells", "/nonexistent/cells.csv", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no such file" in err


def test_cache_reuse_reads_no_partition_twice(tmp_path, cells_csv, monkeypatch):
    from connectomics.sources import volume

    src = VolumeSource(cells_csv, seed=4, fraction=0.2, partition_cells=150)
    build_graph(src, tmp_path, engine="local", progress=False)

    def boom(*a, **k):
        raise AssertionError("regenerated a cached partition")

    monkeypatch.setattr(volume, "write_partition", boom)
    res = build_graph(VolumeSource(cells_csv, seed=4, fraction=0.2, partition_cells=150), tmp_path,
                            engine="local", progress=False)
    assert res.from_cache
    assert TableCache(tmp_path, src.namespace, src.version).manifest()["synapses_pni_2"]["rows"] == \
        res.graph.meta["n_synapses"]


def test_one_build_path_for_every_source_and_engine(tmp_path, cells_csv, local_build):
    """connectomics.build.build_graph is the build: the volume's partitioned synapses through the
    same function as any other source, the engine an argument."""
    from connectomics.sources.surrogate import SurrogateSource

    src = VolumeSource(cells_csv, seed=3, fraction=0.6, partition_cells=200)
    res = build_graph(src, tmp_path, engine="local", progress=False)
    assert res.graph.meta["synapse_files"] == len(res.cache.partition_files(SYNAPSE_TABLE)) > 1
    pd.testing.assert_frame_equal(res.graph.edges, local_build.graph.edges)
    surrogate = build_graph(SurrogateSource(0), tmp_path, engine="local", progress=False)
    assert surrogate.graph.meta["engine"] == "local" and surrogate.graph.meta["synapse_files"] == 1
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        build_graph(SurrogateSource(0), tmp_path, engine="spark")
