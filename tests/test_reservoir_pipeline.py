"""The reservoir sweep: the FER-2013 readout, the report's ranks and figure, and the CLI (user
errors, resuming, a folder of another sweep)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from graphnet.plan import plan_network
from graphnet.reservoir import ReservoirConfig, connectome_reservoir
from graphnet.testing import synthetic_graph, torch_threads
from pipelines import reservoir as cli
from pipelines.reservoir_fer import (fer_readout, pixel_projection, reservoir_features,
                                     standardize_images)
from pipelines.reservoir_report import fer_summary, mc_summary, rank_stats, sweep_figure

from .helpers import lines_with_gid, shared_path


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def small_graph():
    return synthetic_graph(p=0.15, seed=4)


@pytest.fixture(scope="module")
def graph_dir(small_graph, tmp_path_factory):
    return small_graph.save(tmp_path_factory.mktemp("graph") / "graph")


# -- FER-2013 readout ------------------------------------------------------------------------------
def test_images_are_standardised_one_by_one():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 48, 48)).astype(np.uint8)
    imgs[2] = 7                                            # a blank image stays 0
    x = standardize_images(imgs)
    assert x.shape == (3, 2304) and x.dtype == np.float32
    np.testing.assert_allclose(x[:2].mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(x[:2].std(1), 1, atol=1e-4)
    assert not x[2].any()
    p = pixel_projection(10, 2304, 1.5, seed=3)
    np.testing.assert_array_equal(p, pixel_projection(10, 2304, 1.5, seed=3))
    assert np.std(p @ x[0]) == pytest.approx(1.5, rel=0.5)
    with pytest.raises(ValueError, match="FER input scale must be > 0"):
        pixel_projection(10, 2304, 0.0, seed=3)


def synthetic_faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class sets which of 3 horizontal bands is bright, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    imgs = rng.normal(100, 30, (n, 48, 48))
    for c in range(3):
        imgs[y == c, 16 * c:16 * (c + 1)] += 60
    return np.clip(imgs, 0, 255).astype(np.uint8), y


def test_a_reservoir_readout_learns_a_separable_task(small_graph):
    plan = plan_network(small_graph)
    res = connectome_reservoir(plan, ReservoirConfig(rho=0.9))
    train, test = synthetic_faces(300, 1), synthetic_faces(150, 2)
    r = fer_readout(res, train, test, steps=5, input_scale=1.0, seed=0, batch_size=64)
    assert r.accuracy > 0.8                                   # chance is 1/3
    assert r.predictions.shape == (150,) and r.n_train == 300
    feats = reservoir_features(res, test[0][:10], pixel_projection(res.n_inputs_units, 2304, 1.0, 0), 5,
                               batch_size=3)
    assert feats.shape == (10, res.n_readout)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        reservoir_features(res, test[0][:10], pixel_projection(res.n_inputs_units, 2304, 1.0, 0), 5,
                           batch_size=0)


# -- report ----------------------------------------------------------------------------------------
def test_rank_and_permutation_p_values():
    assert rank_stats(5.0, np.array([1, 2, 3])) == {"rank": 1, "of": 4, "p_high": 0.25, "p_low": 1.0}
    s = rank_stats(2.0, np.array([1, 2, 3]))
    assert s["rank"] == 2 and s["p_high"] == pytest.approx(0.75) and s["p_low"] == pytest.approx(0.75)
    assert rank_stats(0.0, np.arange(1, 21))["p_low"] == pytest.approx(1 / 21)


def sweep_rows() -> pd.DataFrame:
    rows = []
    for rho in (0.5, 1.0):
        for s in (1, 2):
            rows.append({"null": "connectome", "draw": 0, "rho": rho, "input_seed": s, "mc": 10 * rho + s})
            for d in range(1, 5):
                rows.append({"null": "degree_shuffle", "draw": d, "rho": rho, "input_seed": s,
                             "mc": 10 * rho + d - 1})
    return pd.DataFrame(rows)


def test_mc_summary_ranks_the_connectome_among_the_draws():
    s = mc_summary(sweep_rows()).set_index("rho")
    # connectome mean 10*rho + 1.5; draws 10*rho + 0..3 -> two draws above it
    assert s.loc[0.5, "connectome_mc"] == pytest.approx(6.5)
    assert s.loc[0.5, "rank"] == 3 and s.loc[0.5, "of"] == 5
    assert s.loc[1.0, "null_median"] == pytest.approx(11.5)
    assert s.loc[1.0, "connectome_sd_seeds"] == pytest.approx(np.std([11, 12], ddof=1))
    fig = sweep_figure(sweep_rows())
    top, bottom = fig.axes[:2]
    assert lines_with_gid(top, "connectome")[0].get_ydata().tolist() == [6.5, 11.5]
    assert lines_with_gid(bottom, "rank:degree_shuffle")[0].get_ydata().tolist() == [3, 3]


def test_fer_summary():
    rows = pd.DataFrame([{"null": "connectome", "draw": 0, "rho": 0.9, "accuracy": 0.40}] +
                        [{"null": "block_random", "draw": d, "rho": 0.9, "accuracy": 0.35 + 0.01 * d}
                         for d in range(1, 4)])
    s = fer_summary(rows).iloc[0]
    assert s["rank"] == 1 and s["of"] == 4 and s["null_mean"] == pytest.approx(0.37)
    with pytest.raises(ValueError, match="0 connectome rows"):
        fer_summary(rows.iloc[1:])


# -- CLI -------------------------------------------------------------------------------------------
QUICK = ["--draws", "2", "--input-seeds", "2", "--rho", "0.5,0.9", "--delays", "5", "--washout", "10",
         "--train", "120", "--test", "60", "--no-progress"]


def test_the_sweep_writes_its_tables_and_resumes(graph_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res"
    assert cli.main(["--graph", str(graph_dir), "--out", str(out), "--no-fer", *QUICK]) == 0
    rows = pd.read_csv(out / "memory_capacity.csv")
    assert len(rows) == (1 + 3 * 2) * 2 * 2                   # networks x rho x input seeds
    assert set(rows["null"]) == {"connectome", "block_random", "degree_shuffle", "weight_shuffle"}
    # matched nulls keep the connectome's edge count and synapse total
    assert rows["edges"].nunique() == 1 and rows["synapses"].nunique() == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["input_seeds"] == [1, 2] and cfg["null_draw_seeds"] == [1, 2] and cfg["fer"] is None
    assert cfg["graph_checksum"]
    for f in ("mc_summary.csv", "mc_summary.md", "memory_capacity.png", "README.md", "memory_curves.csv"):
        assert (out / f).exists(), f
    assert "python -m pipelines.reservoir --graph" in (out / "README.md").read_text()
    # a second run finds every network done and computes nothing
    monkeypatch.setattr("graphnet.memory_capacity.memory_capacity",
                        lambda *a, **k: pytest.fail("recomputed a finished network"))
    assert cli.main(["--graph", str(graph_dir), "--out", str(out), "--no-fer", *QUICK]) == 0
    assert pd.read_csv(out / "memory_capacity.csv").equals(rows)
    # the tables rebuild from the CSVs alone
    (out / "mc_summary.md").unlink()
    assert cli.main(["--out", str(out), "--report"]) == 0
    assert (out / "mc_summary.md").exists()
    # another sweep into the same folder is refused
    capsys.readouterr()
    assert cli.main(["--graph", str(graph_dir), "--out", str(out), "--no-fer", *QUICK, "--rho", "0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reservoir: error:") and "holds another sweep" in err and "rhos" in err
    assert "\n" not in err


@pytest.mark.parametrize("args, message", [
    (["--rho", "0,1"], "--rho: every spectral radius must be > 0"),
    (["--rho", "a,b"], "--rho: expected comma-separated numbers"),
    (["--nulls", "random_walk"], "--nulls: unknown null model"),
    (["--leak", "0"], "ReservoirConfig.leak"),
    (["--washout", "3"], "--washout (3) must be >= --delays (5)"),
    (["--input-populations", "9P"], "ReservoirConfig.input_populations: population(s) ['9P']"),
    (["--data", "no/such/fer2013.csv"], "no/such/fer2013.csv"),
])
def test_user_errors_are_one_line_and_exit_2(graph_dir, tmp_path, capsys, args, message):
    argv = ["--graph", str(graph_dir), "--out", str(tmp_path / "o"), *QUICK, *args]
    if "--data" not in args:
        argv.append("--no-fer")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reservoir: error:") and message in err and "\n" not in err


def test_the_sweep_reads_fer2013_out(graph_dir, tmp_path):
    sample = shared_path("fer2013", "sample.csv")
    out = tmp_path / "fer"
    argv = ["--graph", str(graph_dir), "--out", str(out), *QUICK, "--data", str(sample),
            "--fer-steps", "3", "--fer-draws", "1", "--no-baseline"]
    assert cli.main(argv) == 0
    fer = pd.read_csv(out / "fer.csv")
    assert list(zip(fer["null"], fer["draw"])) == [("connectome", 0), ("block_random", 1),
                                                    ("degree_shuffle", 1), ("weight_shuffle", 1)]
    assert fer["n_train"].iloc[0] == 490 and fer["n_test"].iloc[0] == 105   # sample.csv's split
    best = pd.read_csv(out / "mc_summary.csv")
    real = best.groupby("rho")["connectome_mc"].first()
    assert fer["rho"].iloc[0] == real.idxmax()               # chosen on memory capacity
    with np.load(out / "fer_predictions.npz") as z:
        assert z["connectome_0"].shape == (105,) and z["labels"].shape == (105,)
    assert (out / "fer_summary.md").exists()
    # more FER draws later: same sweep, only the new networks are read out
    assert cli.main([*argv[:-3], "--fer-steps", "3", "--fer-draws", "2", "--no-baseline"]) == 0
    assert len(pd.read_csv(out / "fer.csv")) == 7


def test_fer_only_needs_the_connectomes_memory_capacity(graph_dir, tmp_path, capsys):
    sample = shared_path("fer2013", "sample.csv")
    argv = ["--graph", str(graph_dir), "--out", str(tmp_path / "f"), *QUICK, "--data", str(sample)]
    assert cli.main([*argv, "--fer-only"]) == 2
    assert "lacks the connectome's memory capacity" in capsys.readouterr().err
    assert cli.main([*argv, "--fer-only", "--no-fer"]) == 2
    assert "exclude each other" in capsys.readouterr().err
