"""Checks on the real MICrONS extracts in ../shared (skipped, saying so, where it is absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from connectomics.aggregate import aggregate_synapses
from connectomics.cell_types import ei_class
from connectomics.graph import ConnectomeGraph, NODE_COLUMNS
from connectomics.layers import LayerBounds, depth_um
from tests.helpers import shared_path

VOXEL_NM = np.array([4.0, 4.0, 40.0])
EXPECTED_LAYER = {"23P": "L2/3", "4P": "L4", "5P-IT": "L5", "5P-ET": "L5", "5P-NP": "L5",
                  "6P-IT": "L6", "6P-CT": "L6"}


def _typed_cells() -> pd.DataFrame:
    c = pd.read_csv(shared_path("microns", "nriedman_microns", "cells_no_repeats.csv"), index_col=0)
    pos = c[["pt_x", "pt_y", "pt_z"]].to_numpy(float) * VOXEL_NM
    d = depth_um(pos)
    return pd.DataFrame({
        "root_id": c["pt_root_id"].to_numpy(np.int64), "nucleus_id": np.arange(len(c), dtype=np.int64),
        "cell_type": c["cell_type"].to_numpy(), "mtype": "none", "layer": LayerBounds().assign(d),
        "ei": c["cell_type"].map(ei_class).to_numpy(),
        "x_nm": pos[:, 0], "y_nm": pos[:, 1], "z_nm": pos[:, 2], "depth_um": d,
    })[list(NODE_COLUMNS)]


def test_each_type_median_depth_lands_in_its_layer():
    cells = _typed_cells()
    assert len(cells) == 56_209
    med = cells.groupby("cell_type")["depth_um"].median()
    layers = dict(zip(med.index, LayerBounds().assign(med.to_numpy())))
    assert layers == EXPECTED_LAYER, med.round(0).to_dict()


def test_input_synapses_of_three_23p_cells_by_presynaptic_type():
    """Aggregate the real inputs of three 23P cells; synapses per presynaptic type = the file's."""
    cells = _typed_cells()
    for pct in (5, 50, 95):
        syn = pd.read_csv(shared_path("microns", "nriedman_microns", f"23P_corner_{pct}.csv"), index_col=0)
        edges = aggregate_synapses([syn], cells["root_id"].to_numpy())
        g = ConnectomeGraph(cells, edges)
        post = syn["post_pt_root_id"].iloc[0]
        post_pop = g.nodes.loc[g.nodes["root_id"] == post, ["cell_type", "layer"]].iloc[0]
        assert post_pop["cell_type"] == "23P"
        by_type: dict[str, int] = {}
        for a, b, d in g.type_graph.edges(data=True):
            assert b == f"{post_pop['cell_type']}|{post_pop['layer']}"
            t = g.type_graph.nodes[a]["cell_type"]
            by_type[t] = by_type.get(t, 0) + d["n_synapses"]
        expected = syn.loc[syn["cell_type_pre"] != "Unknown", "cell_type_pre"].value_counts().to_dict()
        assert by_type == expected
        # summed size too, against the file
        typed = syn[syn["cell_type_pre"] != "Unknown"]
        assert sum(d["summed_size"] for *_, d in g.type_graph.edges(data=True)) == typed["size"].sum()
