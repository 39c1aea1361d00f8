"""The surrogate column: deterministic, census-exact, connection probabilities as published."""

from __future__ import annotations

import numpy as np
import pandas as pd

from connectomics import census
from connectomics.layers import LayerBounds, nm_to_frame_um
from connectomics.sources.surrogate import SurrogateSource, generate_column


def test_deterministic_for_a_seed():
    a, b, c = generate_column(3), generate_column(3), generate_column(4)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    pd.testing.assert_frame_equal(a.synapses, b.synapses)
    assert len(a.synapses) != len(c.synapses) or not a.cells.equals(c.cells)


def test_matches_census_counts_exactly(surrogate_column):
    cells = surrogate_column.cells
    assert len(cells) == 1351
    assert (cells["ei"] == "E").sum() == 1188 and (cells["ei"] == "I").sum() == 163
    assert cells["mtype"].value_counts().to_dict() == census.MTYPE_COUNTS
    joint = cells.groupby(["mtype", "cell_type", "layer"]).size()
    expected = census.census_table().groupby(["mtype", "cell_type", "layer"])["n_cells"].sum()
    pd.testing.assert_series_equal(joint.sort_index(), expected.sort_index(), check_names=False)
    # the BioNIC paper's layer widths: 4P 266, 23P 349, L5 185, L6 383
    exc = cells[cells["ei"] == "E"]
    assert ((exc["cell_type"] == "4P") & (exc["layer"] == "L4")).sum() == 266
    assert ((exc["cell_type"] == "23P") & (exc["layer"] == "L2/3")).sum() == 349
    assert (exc["layer"] == "L5").sum() == 185
    assert (exc["layer"] == "L6").sum() == 383


def test_soma_depth_gives_the_census_layer(surrogate_column):
    cells = surrogate_column.cells
    frame = nm_to_frame_um(cells[["x_nm", "y_nm", "z_nm"]].to_numpy())
    assert (LayerBounds().assign(frame[:, 1]) == cells["layer"].to_numpy()).all()
    assert np.ptp(frame[:, 0]) <= 100 and np.ptp(frame[:, 2]) <= 100


def test_connection_probability_matches_pmax_and_sigma(surrogate_column):
    """Observed connected pairs per pmax class pair against the V1DD rule, recomputed here."""
    cells, syn = surrogate_column.cells, surrogate_column.synapses
    frame = nm_to_frame_um(cells[["x_nm", "y_nm", "z_nm"]].to_numpy())
    lat = frame[:, [0, 2]]
    r2 = ((lat[:, None, :] - lat[None, :, :]) ** 2).sum(-1)
    ei = cells["ei"].to_numpy()
    sigma = np.array([[census.SIGMA_UM[a][b] for b in ei] for a in ei])
    cls = cells["pmax_class"].to_numpy()
    pmax = census.PMAX.loc[cls, cls].to_numpy()
    p = pmax * np.exp(-r2 / (2 * sigma**2))
    np.fill_diagonal(p, 0)
    idx = pd.Series(np.arange(len(cells)), index=cells["root_id"])
    pairs = syn[["pre_pt_root_id", "post_pt_root_id"]].drop_duplicates()
    obs = np.zeros_like(p, dtype=bool)
    obs[idx[pairs["pre_pt_root_id"]].to_numpy(), idx[pairs["post_pt_root_id"]].to_numpy()] = True
    codes = pd.Categorical(cls).codes.astype(np.int64)
    k = codes.max() + 1
    block = codes[:, None] * k + codes[None, :]
    n_obs = np.bincount(block.ravel(), weights=obs.ravel(), minlength=k * k)
    n_exp = np.bincount(block.ravel(), weights=p.ravel(), minlength=k * k)
    var = np.bincount(block.ravel(), weights=(p * (1 - p)).ravel(), minlength=k * k)
    tested = var > 5
    z = (n_obs[tested] - n_exp[tested]) / np.sqrt(var[tested])
    assert tested.sum() > 50
    assert np.abs(z).max() < 4.5, f"max |z| = {np.abs(z).max():.2f}"
    # and the rule is really distance-dependent: near pairs connect more than far ones
    ee = (ei[:, None] == "E") & (ei[None, :] == "E")
    near, far = ee & (r2 < 30**2), ee & (r2 > 70**2)
    assert obs[near].mean() > obs[far].mean()


def test_synapse_table_schema(surrogate_column):
    syn = SurrogateSource(0).fetch_synapses(surrogate_column.cells["root_id"].to_numpy(), progress=False)
    assert list(syn.dtypes.astype(str)) == ["int64"] * 3 + ["float64"] * 4  # size: float64, NaN = unknown
    assert syn["id"].is_unique and (syn["size"] >= 1).all() and (syn["size"] % 1 == 0).all()
    assert (syn["pre_pt_root_id"] != syn["post_pt_root_id"]).all()
