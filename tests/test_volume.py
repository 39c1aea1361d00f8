"""Volume surrogate: census inhibitory density, the column's distance rule, determinism for a seed
whatever the blocks, distance dependence, atomic/resumable partitions, the real cell table."""

from __future__ import annotations

import json

import numpy as np

from connectomics.cell_types import ei_class
import pandas as pd
import pytest

from connectomics.atomic_io import sha256_of
from connectomics.cache import CacheError, TableCache
from connectomics.layers import nm_to_frame_um
from connectomics.schema import SCHEMAS, SYNAPSE_TABLE
from connectomics.sources import volume
from connectomics.sources.volume import (
    CENSUS_EXCITATORY, CENSUS_INHIBITORY, VolumeSource, ensure_tables, read_cell_table, synthetic_cell_table,
)
from connectomics.synapse_sampler import SynapseSampler

from tests.helpers import shared_path


@pytest.fixture(scope="module")
def cell_table():
    return synthetic_cell_table(2376, seed=3)


@pytest.fixture(scope="module")
def small_source(cell_table):
    return VolumeSource(cell_table, seed=7, fraction=0.5, partition_cells=256, chunk_rows=16)


def _all_synapses(sampler, order=None):
    order = range(sampler.n_partitions) if order is None else order
    return pd.concat([sampler.partition(b) for b in order], ignore_index=True) \
        .sort_values("id", kind="stable").reset_index(drop=True)


def test_inhibitory_cells_at_census_density(cell_table):
    cells = VolumeSource(cell_table, seed=0).cells
    n_exc = int((cells["ei"] == "E").sum())
    assert n_exc == 2376
    inh = cells[cells["ei"] == "I"]
    assert len(inh) == round(n_exc * CENSUS_INHIBITORY / CENSUS_EXCITATORY) == 326   # 2 x 163
    assert len(inh) / len(cells) == pytest.approx(163 / 1351, abs=1e-3)
    # census mix, doubled exactly: type x layer
    got = inh.groupby(["cell_type", "layer"]).size().to_dict()
    from connectomics import census

    table = census.census_table()
    want = table[table["cell_type"].map(ei_class) == "I"].groupby(["cell_type", "layer"])["n_cells"].sum() * 2
    assert got == want.to_dict()
    assert got[("NGC", "L1")] == 20 and got[("BC", "L6")] == 20 and got[("BPC", "L5")] == 6
    # the depth agrees with the layer, positions come back through the nm transform
    frame = nm_to_frame_um(inh[["x_nm", "y_nm", "z_nm"]].to_numpy())
    np.testing.assert_allclose(frame, inh[["fx_um", "fy_um", "fz_um"]].to_numpy(), atol=1e-6)
    from connectomics.layers import LayerBounds

    assert (LayerBounds().assign(frame[:, 1]) == inh["layer"].to_numpy()).all()
    # root ids unique, sorted (node order), real ones untouched
    assert cells["root_id"].is_monotonic_increasing and cells["root_id"].is_unique
    assert set(cell_table["pt_root_id"]) <= set(cells["root_id"])
    assert (inh["root_id"] >= volume.INH_ROOT_ID_BASE).all()


def test_same_distance_rule_as_the_column_surrogate(surrogate_column):
    cells = surrogate_column.cells.copy()
    frame = nm_to_frame_um(cells[["x_nm", "y_nm", "z_nm"]].to_numpy())
    cells["fx_um"], cells["fy_um"], cells["fz_um"] = frame.T
    s = SynapseSampler.from_cells(cells, seed=0)
    rows = np.arange(0, len(cells), 7)
    np.testing.assert_allclose(s.pair_probability(rows), surrogate_column.pair_probability[rows],
                               rtol=2e-5, atol=1e-9)


def test_deterministic_for_a_seed_whatever_the_blocks(cell_table):
    a = VolumeSource(cell_table, seed=11, fraction=0.3, partition_cells=100, chunk_rows=7).sampler
    b = VolumeSource(cell_table, seed=11, fraction=0.3, partition_cells=333, chunk_rows=64).sampler
    sa = _all_synapses(a)
    sb = _all_synapses(b, order=reversed(range(b.n_partitions)))
    assert len(sa) > 1000
    pd.testing.assert_frame_equal(sa, sb, check_exact=True)
    assert sa["id"].is_unique and list(sa.columns) == list(SCHEMAS[SYNAPSE_TABLE])
    c = VolumeSource(cell_table, seed=12, fraction=0.3).sampler
    assert not _all_synapses(c)[["pre_pt_root_id", "post_pt_root_id"]].equals(sa[["pre_pt_root_id", "post_pt_root_id"]])


def test_connection_probability_falls_with_distance_as_drawn(cell_table):
    src = VolumeSource(cell_table, seed=5, fraction=0.8)
    s = src.sampler
    syn = _all_synapses(s)
    idx = pd.Index(s.root_ids)
    pairs = np.unique(idx.get_indexer(syn["pre_pt_root_id"]) * s.n + idx.get_indexer(syn["post_pt_root_id"]))
    connected = np.zeros(s.n * s.n, dtype=bool)
    connected[pairs] = True
    connected = connected.reshape(s.n, s.n)
    p = s.pair_probability(np.arange(s.n)).astype(np.float64)
    lat = s.frame_um[:, [0, 2]]
    r = np.sqrt(((lat[:, None, :] - lat[None, :, :]) ** 2).sum(-1))
    off = ~np.eye(s.n, dtype=bool)
    assert not connected[~off].any()                     # no autapses
    rates = []
    for lo, hi in [(0, 50), (50, 150), (150, 300), (300, 2000)]:
        m = off & (r >= lo) & (r < hi)
        n_conn, expected = connected[m].sum(), p[m].sum()
        assert abs(n_conn - expected) < 5 * np.sqrt(expected) + 2, (lo, hi, n_conn, expected)
        rates.append(n_conn / m.sum())
    assert rates[0] > 2 * rates[2] > 0 and rates[2] > 3 * rates[3]
    # synapses per connection: 1 + Poisson(lambda), lambda fitted to the real column (E 0.34, I 1.68)
    from connectomics.census import SYNAPSES_PER_CONNECTION_EXTRA_MEAN as lam

    per_pair = syn.groupby(["pre_pt_root_id", "post_pt_root_id"]).size()
    pre_e = src.cells.set_index("root_id").loc[per_pair.index.get_level_values(0), "ei"].to_numpy() == "E"
    assert per_pair[pre_e].mean() == pytest.approx(1 + lam["E"], abs=0.05)
    assert per_pair[~pre_e].mean() == pytest.approx(1 + lam["I"], abs=0.15)


def test_partitions_are_atomic_and_resume(tmp_path, small_source, monkeypatch):
    import pyarrow.parquet as pq

    cache = TableCache(tmp_path, small_source.namespace, small_source.version)
    n_parts = small_source.sampler.n_partitions
    assert n_parts >= 4
    real_write = pq.write_table
    calls = {"n": 0}

    def crashing_write(table, where, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:       # die half-way through writing the third partition
            with open(where, "wb") as f:
                f.write(b"PAR1 half a file")
            raise KeyboardInterrupt
        return real_write(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        volume.write_synapse_partitions(small_source, cache, progress=False)
    monkeypatch.setattr(pq, "write_table", real_write)
    folder = cache.dir / SYNAPSE_TABLE
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    manifest = cache.manifest()
    assert sorted(k for k in manifest if k.startswith(SYNAPSE_TABLE)) == [
        f"{SYNAPSE_TABLE}/part-00000", f"{SYNAPSE_TABLE}/part-00001"]
    with pytest.raises(CacheError, match="no complete partitioned"):
        cache.partition_files(SYNAPSE_TABLE)

    # a killed writer's temp file, a corrupted partition: cleaned / regenerated
    (folder / ".part-00002.parquet.abc.tmp").write_bytes(b"junk")
    first = cache.partition_path(SYNAPSE_TABLE, 0).stat().st_mtime_ns
    cache.partition_path(SYNAPSE_TABLE, 1).write_bytes(b"not parquet")
    tables, files = ensure_tables(small_source, cache, progress=False)
    assert len(files) == n_parts and not list(folder.glob(".*.tmp"))
    assert cache.partition_path(SYNAPSE_TABLE, 0).stat().st_mtime_ns == first          # complete parts are kept
    entry = cache.manifest()[SYNAPSE_TABLE]
    assert entry["partitioned"] and entry["parts"] == [f"{SYNAPSE_TABLE}/part-{b:05d}" for b in range(n_parts)]
    # identical to an uninterrupted run, file by file
    clean = TableCache(tmp_path / "clean", small_source.namespace, small_source.version)
    ensure_tables(small_source, clean, progress=False)
    assert [sha256_of(f) for f in files] == [sha256_of(f) for f in clean.partition_files(SYNAPSE_TABLE)]
    assert entry["rows"] == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    whole = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert whole["id"].is_unique and entry["rows"] == len(whole)
    # tampering is refused by name
    cache.partition_path(SYNAPSE_TABLE, 2).write_bytes(b"tampered")
    with pytest.raises(CacheError, match="part-00002.parquet: checksum"):
        cache.partition_files(SYNAPSE_TABLE)


def test_cache_with_another_block_size_is_redrawn_to_the_same_table(tmp_path, cell_table):
    src_a = VolumeSource(cell_table, seed=7, fraction=0.5, partition_cells=256)
    src_b = VolumeSource(cell_table, seed=7, fraction=0.5, partition_cells=100)
    assert src_a.version == src_b.version                      # same data, same cache folder
    cache = TableCache(tmp_path, src_a.namespace, src_a.version)
    _, files_a = ensure_tables(src_a, cache, progress=False)
    whole_a = pd.concat([pd.read_parquet(f) for f in files_a]).sort_values("id").reset_index(drop=True)
    _, files_b = ensure_tables(src_b, cache, progress=False)
    assert len(files_b) == src_b.sampler.n_partitions > len(files_a)
    whole_b = pd.concat([pd.read_parquet(f) for f in files_b]).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(whole_a, whole_b, check_exact=True)
    assert cache.manifest()[SYNAPSE_TABLE]["query"]["partition_cells"] == 100


def test_cell_tables_are_canonical(tmp_path, small_source):
    from connectomics.cells import assemble_cells
    from connectomics.schema import COLUMN_TABLE, MTYPE_TABLE, validate

    cache = TableCache(tmp_path, small_source.namespace, small_source.version)
    tables, _ = ensure_tables(small_source, cache, progress=False)
    for name, df in tables.items():
        validate(df, name)
    assert len(tables[COLUMN_TABLE]) == len(small_source.cells)
    assert set(tables[MTYPE_TABLE]["cell_type"]) == {"PTC", "DTC", "ITC", "STC"}
    nodes = assemble_cells(tables)
    assert (nodes["root_id"].to_numpy() == small_source.cells["root_id"].to_numpy()).all()
    assert (nodes["layer"].to_numpy() == small_source.cells["layer"].to_numpy()).all()
    m = json.loads(cache.manifest_path.read_text())
    assert m[COLUMN_TABLE]["source"] == "volume" and "NOT MICrONS" in m[COLUMN_TABLE]["query"]["note"]


def test_bad_cell_tables_are_named(tmp_path, cell_table):
    bad = cell_table.copy()
    bad.loc[4, "cell_type"] = "L9Q"
    path = tmp_path / "cells.csv"
    bad.to_csv(path)
    with pytest.raises(Exception, match="L9Q"):
        read_cell_table(path)
    with pytest.raises(Exception, match="needs pt_x"):
        read_cell_table(cell_table.drop(columns=["pt_z"]))
    with pytest.raises(Exception, match="no such file"):
        VolumeSource(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="fraction"):
        VolumeSource(cell_table, fraction=0.0)


def test_real_excitatory_table():
    path = shared_path("microns", "nriedman_microns", "cells_no_repeats.csv")
    table = read_cell_table(path)
    assert len(table) == 56209 and table["cell_type"].value_counts()["23P"] == 17308
    cells = VolumeSource(path, seed=0).cells
    n_inh = int((cells["ei"] == "I").sum())
    assert n_inh == round(56209 * 163 / 1188) == 7712
    assert n_inh / len(cells) == pytest.approx(0.1207, abs=5e-4)
    med = cells[cells["ei"] == "E"].groupby("cell_type")["fy_um"].median()
    assert 150 < med["23P"] < 200 and 290 < med["4P"] < 330 and 600 < med["6P-CT"] < 650   # SOURCE.md
    small = VolumeSource(path, seed=0, fraction=0.02)
    assert len(small.cells) == round(0.02 * 56209) + round(round(0.02 * 56209) * 163 / 1188)
    syn = small.sampler.partition(0)
    assert len(syn) > 100 and syn["pre_pt_root_id"].isin(small.cells["root_id"]).all()


def test_compiled_volume_column_sparse_equals_dense_and_trains(tmp_path, small_source):
    """The volume graph compiles into a column over every excitatory cell (one layer per
    excitatory class, any soma layer); sparse and dense give the same outputs; a few steps train."""
    import torch

    from connectomics.build import build_graph
    from graphnet import LayerSpec, chain, compile_column

    g = build_graph(small_source, tmp_path, engine="local", progress=False).graph
    layers = [LayerSpec("A", ("4P",), None), LayerSpec("B", ("23P",), None),
              LayerSpec("C", ("5P-IT", "5P-ET", "5P-NP"), None),
              LayerSpec("D", ("6P-IT", "6P-CT", "6P-U", "WM-P"), None)]
    cols = {b: compile_column(g, chain(layers, backend=b, noise_std=0.0, hebbian_rate=0.0, seed=2), in_features=32)
            for b in ("sparse", "dense")}
    sizes = [l.size for l in cols["sparse"].layers.values()]
    typed = (g.nodes["ei"] == "E") & ~g.nodes["cell_type"].str.startswith("Unsure")
    assert sum(sizes) == int(typed.sum())          # every typed excitatory cell, once
    assert set(cols["sparse"].backends.values()) == {"sparse"} and set(cols["dense"].backends.values()) == {"dense"}
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cols["sparse"](x), cols["dense"](x), rtol=1e-4, atol=1e-5)
    col = cols["sparse"]
    head = torch.nn.Linear(col.out_features, 3)
    y = torch.arange(16) % 3
    opt = torch.optim.Adam(list(col.parameters()) + list(head.parameters()), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(head(col(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    proj = col.projection("A", "B")
    assert proj.weight.grad is not None and torch.isfinite(proj.weight.grad).all()


def test_refresh_recovers_a_corrupt_manifest_and_regenerates(tmp_path, small_source):
    cache = TableCache(tmp_path, small_source.namespace, small_source.version)
    tables, files = ensure_tables(small_source, cache, progress=False)
    digests = [sha256_of(f) for f in files]
    cache.manifest_path.write_text("{")
    with pytest.raises(CacheError, match="corrupt manifest"):
        ensure_tables(small_source, cache, progress=False)
    again, files2 = ensure_tables(small_source, cache, refresh=True, progress=False)
    assert [sha256_of(f) for f in files2] == digests  # the same partitions, regenerated
    pd.testing.assert_frame_equal(again["nucleus_detection_v0"], tables["nucleus_detection_v0"])
