"""Streaming aggregation equals the plain pandas groupby, in dense and sparse modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from connectomics import aggregate
from connectomics.aggregate import aggregate_synapses, iter_parquet_batches


def _random_table(rng, n_cells, n_syn, outside=0.3):
    roots = rng.choice(10**12, size=n_cells, replace=False).astype(np.int64)
    pool = np.concatenate([roots, rng.integers(10**12, 2 * 10**12, size=max(1, int(n_cells * outside)))])
    return roots, pd.DataFrame({
        "pre_pt_root_id": rng.choice(pool, n_syn), "post_pt_root_id": rng.choice(pool, n_syn),
        "size": rng.integers(1, 1000, n_syn),
    })


def _reference(roots, syn):
    idx = pd.Series(np.arange(len(roots)), index=roots)
    s = syn[syn["pre_pt_root_id"].isin(roots) & syn["post_pt_root_id"].isin(roots)]
    g = s.groupby(["pre_pt_root_id", "post_pt_root_id"]).agg(n_synapses=("size", "size"), summed_size=("size", "sum"))
    g = g.reset_index()
    g["pre"], g["post"] = idx[g["pre_pt_root_id"]].to_numpy(), idx[g["post_pt_root_id"]].to_numpy()
    return g.sort_values(["pre", "post"]).reset_index(drop=True)


@settings(max_examples=25, deadline=None)
@given(n_cells=st.integers(1, 60), n_syn=st.integers(0, 3000), seed=st.integers(0, 10**6),
       n_batches=st.integers(1, 4), dense=st.booleans())
def test_matches_pandas(n_cells, n_syn, seed, n_batches, dense):
    rng = np.random.default_rng(seed)
    roots, syn = _random_table(rng, n_cells, n_syn)
    old = aggregate.DENSE_MAX_NODES
    aggregate.DENSE_MAX_NODES = 10**6 if dense else 0
    try:
        cuts = np.linspace(0, len(syn), n_batches + 1).astype(int)
        got = aggregate_synapses([syn.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])], roots)
    finally:
        aggregate.DENSE_MAX_NODES = old
    ref = _reference(roots, syn)
    assert got["pre"].tolist() == ref["pre"].tolist() and got["post"].tolist() == ref["post"].tolist()
    assert got["n_synapses"].tolist() == ref["n_synapses"].tolist()
    np.testing.assert_allclose(got["summed_size"], ref["summed_size"])
    assert (got["pre_root_id"].to_numpy() == roots[got["pre"]]).all()


def test_streams_parquet_row_groups(tmp_path):
    rng = np.random.default_rng(0)
    roots, syn = _random_table(rng, 200, 50_000)
    path = tmp_path / "syn.parquet"
    pq.write_table(pa.Table.from_pandas(syn.assign(id=np.arange(len(syn))), preserve_index=False), path,
                   row_group_size=7_000)
    batches = list(iter_parquet_batches([path], batch_rows=7_000))
    assert len(batches) == 8 and batches[0].schema.names == ["pre_pt_root_id", "post_pt_root_id", "size"]
    got = aggregate_synapses(iter_parquet_batches([path], batch_rows=7_000), roots)
    assert got["n_synapses"].sum() == len(_reference_rows(roots, syn))


def _reference_rows(roots, syn):
    return syn[syn["pre_pt_root_id"].isin(roots) & syn["post_pt_root_id"].isin(roots)]


def test_duplicate_root_ids_refused():
    with pytest.raises(ValueError, match="not unique"):
        aggregate_synapses([], np.array([1, 2, 2]))


@pytest.mark.parametrize("flagged", [True, False])
def test_type_graph_streamed_equals_neuron_level_route(flagged, monkeypatch):
    from connectomics.aggregate import aggregate_type_graph
    from connectomics.graph import ConnectomeGraph

    rng = np.random.default_rng(1)
    roots, syn = _random_table(rng, 300, 20_000)
    types = rng.choice(["23P", "4P", "BC", "MC"], size=len(roots))
    nodes = pd.DataFrame({"root_id": roots, "nucleus_id": np.arange(300), "cell_type": types, "mtype": "none",
                          "layer": rng.choice(["L2/3", "L4"], size=300), "ei": np.where(np.isin(types, ["BC", "MC"]), "I", "E"),
                          "x_nm": 0.0, "y_nm": 0.0, "z_nm": 0.0, "depth_um": 0.0})
    monkeypatch.setattr(aggregate, "FLAG_MAX_NODES", 10**6 if flagged else 0)
    streamed = aggregate_type_graph([syn.iloc[:7000], syn.iloc[7000:]], nodes)
    reference = ConnectomeGraph(nodes, aggregate_synapses([syn], roots)).type_graph
    assert sorted(streamed.edges(data=True)) == sorted(reference.edges(data=True))
    assert dict(streamed.nodes(data=True)) == dict(reference.nodes(data=True))
