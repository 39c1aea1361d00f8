"""The ``cave`` source yields the bundled column's graph: the snapshot's cells and
connections served as live-shaped CAVE rows (one synapse row per counted synapse with a size,
typed columns, bool proofreading statuses, plain "Unsure" labels, voxel-derived nm positions)
through caveclient's ``CAVEclientMock`` and the fake materialization server of
``test_cave_source``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import responses
from caveclient.tools.testing import CAVEclientMock

from connectomics.build import build_graph
from connectomics.schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE,
)
from connectomics.sources.cave import CaveSource
from connectomics.sources.column import load_column_snapshot
from tests.cave_mock import DATASTACK, VERSION, FakeCave


def column_world() -> dict[str, pd.DataFrame]:
    """The bundled column as the live server holds it (reference tables joined to the nucleus table)."""
    snap = load_column_snapshot()
    c = snap.cells.reset_index(drop=True)
    n = len(c)
    roots = c["root_id"].to_numpy(np.int64)
    pos = c[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(float) * [4.0, 4.0, 40.0]
    nucleus = pd.DataFrame({
        "id": c["nucleus_id"], "created": pd.Timestamp("2023-01-01", tz="UTC"), "valid": True,
        "volume": c["volume_um3"], "pt_supervoxel_id": roots + 11, "pt_root_id": roots,
        "pt_position_x": pos[:, 0], "pt_position_y": pos[:, 1], "pt_position_z": pos[:, 2],
    })
    system = np.where(c["ei_class"] == "I", "aibs_coarse_inhibitory", "aibs_coarse_excitatory")
    # the CAVE reference table says plain "Unsure"; its classification system carries the class
    coarse = c["cell_type"].where(~c["cell_type"].str.startswith("Unsure"), "Unsure")

    def reference(labels, systems, first_id: int) -> pd.DataFrame:
        ref = nucleus.rename(columns={"id": "id_ref", "created": "created_ref", "valid": "valid_ref"})
        own = pd.DataFrame({"id": np.arange(n, dtype=np.int64) + first_id,
                            "created": pd.Timestamp("2023-06-01", tz="UTC"), "valid": True,
                            "target_id": c["nucleus_id"], "classification_system": systems,
                            "cell_type": labels})
        return pd.concat([own, ref], axis=1)

    e = snap.connections
    root_of = pd.Series(roots, index=c["nucleus_id"].to_numpy())
    count = e["n_synapses"].to_numpy()
    pre = np.repeat(root_of.loc[e["pre_nucleus_id"]].to_numpy(), count)
    post = np.repeat(root_of.loc[e["post_nucleus_id"]].to_numpy(), count)
    m = len(pre)
    rng = np.random.default_rng(0)
    synapses = pd.DataFrame({
        "id": rng.permutation(m).astype(np.int64) + 10**8, "created": pd.Timestamp("2022-01-01", tz="UTC"),
        "valid": True, "size": rng.integers(50, 20_000, m).astype(np.int64),
        "pre_pt_supervoxel_id": pre + 11, "pre_pt_root_id": pre,
        "post_pt_supervoxel_id": post + 11, "post_pt_root_id": post,
        "ctr_pt_position_x": rng.uniform(6e5, 8e5, m), "ctr_pt_position_y": rng.uniform(4e5, 9e5, m),
        "ctr_pt_position_z": rng.uniform(8e5, 9e5, m),
    })
    proof = pd.DataFrame({
        "id": np.arange(n, dtype=np.int64) + 1, "created": pd.Timestamp("2023-03-01", tz="UTC"), "valid": True,
        "pt_supervoxel_id": roots + 11, "pt_root_id": roots, "valid_id": roots,
        "status_dendrite": True, "status_axon": c["ei_class"].eq("I").to_numpy(),   # bools, as caveclient >= 8
        "strategy_dendrite": "dendrite_extended", "strategy_axon": "axon_fully_extended",
    })
    return {
        NUCLEUS_TABLE: nucleus,
        COLUMN_TABLE: reference(coarse, system, 1),
        CELL_TYPE_TABLE: reference(coarse, system, 5000),
        MTYPE_TABLE: reference(c["mtype"], "aibs_mtype", 9000),
        PROOFREADING_TABLE: proof,
        SYNAPSE_TABLE: synapses,
    }


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_cave_rows_of_the_column_give_the_bundled_graph(column_graph, rsps, tmp_path):
    world = column_world()
    assert (world[COLUMN_TABLE]["cell_type"] == "Unsure").sum() == 18
    fake = FakeCave(world).install(rsps)
    client = CAVEclientMock(datastack_name=DATASTACK, materialization=True,
                            available_materialization_versions=[VERSION], set_version=VERSION)
    src = CaveSource(DATASTACK, VERSION, client=client, batch_size=2000, timeout_s=5.0, max_retries=0)
    got = build_graph(src, tmp_path, progress=False).graph
    want = column_graph.graph
    assert fake.n_queries == 6  # one query per table: the column fits one batch
    pd.testing.assert_frame_equal(got.nodes, want.nodes)
    cols = ["pre", "post", "pre_root_id", "post_root_id", "n_synapses"]
    pd.testing.assert_frame_equal(got.edges[cols], want.edges[cols])
    # the live rows carry sizes, the counts-only snapshot does not
    assert got.edges["summed_size"].notna().all() and want.edges["summed_size"].isna().all()
    assert int(got.edges["summed_size"].sum()) == int(world[SYNAPSE_TABLE]["size"].sum())
