"""The surrogate column: deterministic, census-exact, connection probabilities fitted to the real column."""

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
    # the BioNIC paper's layer widths, by type: 4P 266, 23P 349, L5 types 185, L6 types 383
    counts = cells["cell_type"].value_counts()
    assert counts["4P"] == 266 and counts["23P"] == 349
    assert counts[["5P-IT", "5P-ET", "5P-NP"]].sum() == 185
    assert counts[["6P-IT", "6P-CT", "6P-U", "WM-P"]].sum() == 383


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
    pmax = census.PMAX.loc[cls, cls].to_numpy()  # fitted per type pair
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


def _type_level_probability(column) -> tuple[np.ndarray, np.ndarray]:
    """(connected pairs, possible pairs) per (pre type, post type), in census.PMAX_CLASSES order."""
    cells, syn = column.cells, column.synapses
    code = pd.Categorical(cells["cell_type"], categories=census.PMAX_CLASSES).codes.astype(np.int64)
    assert (code >= 0).all()
    k = len(census.PMAX_CLASSES)
    idx = pd.Series(np.arange(len(cells)), index=cells["root_id"])
    pairs = syn[["pre_pt_root_id", "post_pt_root_id"]].drop_duplicates()
    pre, post = code[idx[pairs["pre_pt_root_id"]].to_numpy()], code[idx[pairs["post_pt_root_id"]].to_numpy()]
    connected = np.bincount(pre * k + post, minlength=k * k).reshape(k, k)
    n = np.bincount(code, minlength=k)
    possible = np.outer(n, n) - np.diag(n)
    return connected, possible


def test_reproduces_the_real_columns_type_level_probabilities(surrogate_column):
    """The re-fit: drawn at the column's size, the surrogate's connection probability per type pair
    is the real MICrONS column's (census.P_OBSERVED, from the bundled column) within sampling error."""
    connected, possible = _type_level_probability(surrogate_column)
    p_real = census.P_OBSERVED.to_numpy()
    tested = possible * p_real * (1 - p_real) > 25          # enough pairs for a normal approximation
    assert tested.sum() > 60
    # the spread of a realisation: binomial, widened by the position draw (one shared layout)
    z = (connected - possible * p_real)[tested] / np.sqrt(possible * p_real * (1 - p_real))[tested]
    assert np.median(np.abs(z)) < 2.0, np.median(np.abs(z))
    rel = np.abs(connected / np.maximum(possible, 1) - p_real)[tested] / p_real[tested]
    assert np.mean(rel) < 0.15, np.mean(rel)
    # totals: the real column has 75,251 connected pairs and 141,452 synapses
    assert abs(connected.sum() - 75_251) / 75_251 < 0.03
    assert abs(len(surrogate_column.synapses) - 141_452) / 141_452 < 0.05


def test_the_old_published_table_is_kept_for_comparison():
    assert census.V1DD_PMAX.shape == (19, 19)
    assert census.v1dd_pmax_class("BC", "L4") == "L4_PV"
    assert census.pmax_class("5P-ET") == census.pmax_class("5P-PT") == "5P-ET"


def test_gauss_factor_against_monte_carlo():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from fit_surrogate import gauss_factor

    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 100, size=(2, 400_000, 2))
    mc = np.exp(-((a - b) ** 2).sum(-1) / (2 * 110.0**2)).mean()
    assert abs(gauss_factor(110.0, 100.0) - mc) < 2e-3


def test_fitted_tables_are_rederived_byte_for_byte(column_graph, tmp_path):
    """scripts/fit_surrogate.py on the bundled real column rewrites the shipped tables exactly."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import fit_surrogate

    assert fit_surrogate.main(["--graph", str(column_graph.folder), "--out", str(tmp_path)]) == 0
    for name in ("census.csv", "pmax_by_type.csv", "synapses_per_connection.csv", "checksums.json"):
        assert (tmp_path / name).read_bytes() == (census.DATA / name).read_bytes(), name
