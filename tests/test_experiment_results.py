"""Plans that survive machines (committed results, config-matched skips), progress and the
thread share of pipelines.experiments, and the statistics of its report (pipelines.plan_stats)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pipelines import experiments as ex
from pipelines import plan_results as pr
from pipelines import plan_stats as ps
from pipelines import runtime
from tests.helpers import small_graph, synthetic_csv


# ------------------------------------------------------------------------------------------------
# committed results: tiny real trainings (in-process), a second machine, a changed config
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> dict:
    """Plan ``base`` overrides for seconds-long trainings on a synthetic CSV and a small graph."""
    root = tmp_path_factory.mktemp("planenv")
    data = synthetic_csv(root / "fer.csv")
    small_graph().save(root / "graph")
    return dict(data=str(data), cache_root=str(root / "cache"), graph=str(root / "graph"), epochs=1,
                batch_size=16, conv1_channels=4, conv2_channels=4, feat_size=4, lateral_size=3,
                warmup_epochs=1, patience=0, eval_batch_size=64, log_every=3, plots=False,
                noise_std=0.1, hebbian_rate=1e-3, homeostasis=True)


def _in_process(launched: list):
    """An ``_execute`` that trains in this process (no interpreter start-up) and records the command."""
    from pipelines import train

    def run(cmd, log, cwd):
        launched.append(cmd)
        return train.main(cmd[3:])
    return run


def test_results_are_committed_and_finish_on_another_machine(tmp_path, tiny_base, monkeypatch):
    plan_file = tmp_path / "tiny.json"
    plan_file.write_text(json.dumps({"base": tiny_base, "reference": "full", "rows": [
        {"name": "full", "overrides": {}}, {"name": "no_dale", "overrides": {"dale": False}}]}))
    results = tmp_path / "results"
    launched: list = []
    monkeypatch.setattr(ex, "_execute", _in_process(launched))
    monkeypatch.setattr(ex.runtime, "default_threads", lambda local_processes=1: 1)
    args = ["--plan", str(plan_file), "--seeds", "2", "--results", str(results)]
    # machine 1 runs seed 1 only
    assert ex.main([*args[:3], "1", *args[4:], "--out", str(tmp_path / "m1")]) == 0
    assert len(launched) == 2
    res = results / "tiny" / "full" / "s1"
    assert sorted(p.name for p in res.iterdir()) == [
        "config.json", "eval_PrivateTest.json", "eval_PrivateTest_final.json", "eval_PublicTest.json",
        "eval_PublicTest_final.json", "metrics.json", "predictions.npz", "run.json"]
    assert (res / "predictions.npz").read_bytes() == (tmp_path / "m1" / "full" / "s1" / "predictions.npz").read_bytes()
    info = json.loads((res / "run.json").read_text())
    assert info["seconds"] > 0 and (info["commit"] is None or len(info["commit"].split("+")[0]) == 40)
    # machine 2: no runs folder, only the committed results -> seed 1 skipped, seed 2 run
    launched.clear()
    assert ex.main([*args, "--out", str(tmp_path / "m2")]) == 0
    assert sorted(c[c.index("--out") + 1] for c in launched) == [
        str(tmp_path / "m2" / "full" / "s2"), str(tmp_path / "m2" / "no_dale" / "s2")]
    launched.clear()
    assert ex.main([*args, "--out", str(tmp_path / "m3")]) == 0 and launched == []
    assert ex.main([*args, "--rows", "no_dale", "--out", str(tmp_path / "m3")]) == 0 and launched == []
    assert len(json.loads((results / "tiny" / "plan.json").read_text())["rows"]) == 2   # all rows kept
    # the report from results/ alone (no runs folder)
    shutil.rmtree(tmp_path / "m1")
    shutil.rmtree(tmp_path / "m2")
    assert ex.main(["--report", "--results", str(results)]) == 0
    md = (results / "tiny" / "report.md").read_text()
    assert "| full | 2 |" in md and "| no_dale | 2 |" in md
    # the committed predictions give the image-level statistics and the final epoch
    import pandas as pd

    row = pd.read_csv(results / "tiny" / "report.csv").set_index("row").loc["no_dale"]
    assert row["boot_lo"] <= row["delta_acc"] <= row["boot_hi"] and row["mcnemar_seeds"] == 2
    assert np.isfinite(row["final_acc_mean"]) and np.isfinite(row["delta_final"])
    assert (results / "tiny" / "report.png").stat().st_size > 1000
    # a changed config is re-run (and its result replaced), never reused
    plan = json.loads(plan_file.read_text())
    plan["rows"][1]["overrides"]["lr"] = 1e-3
    plan_file.write_text(json.dumps(plan))
    assert ex.main([*args, "--out", str(tmp_path / "m4")]) == 0
    assert sorted(c[c.index("--out") + 1] for c in launched) == [
        str(tmp_path / "m4" / "no_dale" / "s1"), str(tmp_path / "m4" / "no_dale" / "s2")]
    assert json.loads((results / "tiny" / "no_dale" / "s1" / "config.json").read_text())["lr"] == 1e-3


def test_a_run_shared_by_two_plans_is_trained_once(tmp_path, tiny_base, monkeypatch):
    results = tmp_path / "results"
    ctl, abl = tmp_path / "ctl.json", tmp_path / "abl.json"
    ctl.write_text(json.dumps({"base": tiny_base, "reference": "connectome", "rows": [
        {"name": "connectome", "overrides": {"mask": "connectome"}}]}))
    abl.write_text(json.dumps({"base": tiny_base, "reference": "full", "rows": [
        {"name": "full", "overrides": {}}, {"name": "no_dale", "overrides": {"dale": False}}]}))
    launched: list = []
    monkeypatch.setattr(ex, "_execute", _in_process(launched))
    monkeypatch.setattr(ex.runtime, "default_threads", lambda local_processes=1: 1)
    common = ["--seeds", "1", "--results", str(results)]
    assert ex.main(["--plan", str(ctl), *common, "--out", str(tmp_path / "r1")]) == 0
    launched.clear()
    assert ex.main(["--plan", str(abl), *common, "--out", str(tmp_path / "r2")]) == 0
    # 'full' is 'connectome' (the default mask): copied, not trained; 'no_dale' trained
    assert [c[c.index("--out") + 1] for c in launched] == [str(tmp_path / "r2" / "no_dale" / "s1")]
    src, dst = results / "ctl" / "connectome" / "s1", results / "abl" / "full" / "s1"
    assert json.loads((dst / "run.json").read_text())["reused_from"] == "ctl/connectome/s1"
    assert (dst / "metrics.json").read_text() == (src / "metrics.json").read_text()
    assert not list((results / "abl").glob(".*"))                   # no temporary folder left
    # --no-reuse trains it (another plan label, so nothing of its own is committed yet)
    launched.clear()
    assert ex.main(["--plan", str(abl), *common, "--name", "abl2", "--rows", "full", "--no-reuse",
                    "--out", str(tmp_path / "r3")]) == 0
    assert [c[c.index("--out") + 1] for c in launched] == [str(tmp_path / "r3" / "full" / "s1")]
    # a result of another seed or config is never taken
    other = pr.find_same_result(results, ex.Run("full", 2, tmp_path, tiny_base).expected())
    assert other is None
    # of several matches the most complete is reused (per-image predictions, final-epoch
    # evaluation: older runs lack them), not the first by path
    expected = pr.stored_config(src)
    assert pr.find_same_result(results, expected) == dst              # abl/ before ctl/
    poor = results / "aaa" / "connectome" / "s1"                      # first by path
    shutil.copytree(src, poor)
    for f in [poor / "predictions.npz", *poor.glob("eval_*_final.json")]:
        f.unlink()
    assert pr.find_same_result(results, expected) == dst
    (dst / "predictions.npz").unlink()
    assert pr.find_same_result(results, expected) == results / "abl2" / "full" / "s1"
    shutil.rmtree(poor.parent.parent)


def test_ignored_fields_do_not_force_a_rerun():
    run = ex.Run("a", 1, Path("/x/a/s1"), {"preset": "paper"})
    moved = ex.Run("a", 1, Path("/elsewhere/s1"), {"preset": "paper", "threads": 7, "progress": False,
                                                   "data": "/other/fer.csv", "eval_batch_size": 8})
    assert run.expected() == moved.expected()
    assert pr.config_diff(run.expected(), ex.Run("a", 2, Path("/x"), {"preset": "paper", "mask": "dense"})
                          .expected()) == ["column.mask", "column.seed", "seed"]


def test_store_result_is_atomic_and_small(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ex.Run("a", 1, run, {}).config().save(run / "config.json")
    with pytest.raises(ValueError, match="not a finished run"):
        pr.store_result(run, tmp_path / "res")
    (run / "metrics.json").write_text(json.dumps({"summary": {"finished": True}, "epochs": []}))
    (run / "eval_PublicTest.json").write_text("{}")
    (run / "eval_Big.json").write_bytes(b"x" * (pr.MAX_BYTES + 1))
    for f in ("final.pt", "best.pt", "curves.png"):
        (run / f).write_bytes(b"x")
    # a run of before predictions were stored: stored without them
    old = pr.store_result(run, tmp_path / "res" / "a" / "s0")
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "eval_PublicTest.json",
                                                      "metrics.json", "run.json"]
    (run / "predictions.npz").write_bytes(b"npz")
    dest = pr.store_result(run, tmp_path / "res" / "a" / "s1", seconds=12.5)
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "eval_PublicTest.json",
                                                       "metrics.json", "predictions.npz", "run.json"]
    assert pr.run_seconds(dest) == 12.5
    pr.store_result(run, dest, seconds=3.0)       # replaces, leaves no temporary folders
    assert pr.run_seconds(dest) == 3.0 and sorted(p.name for p in dest.parent.iterdir()) == ["s0", "s1"]


# ------------------------------------------------------------------------------------------------
# progress and threads
# ------------------------------------------------------------------------------------------------
def test_eta_from_finished_durations():
    p = ex.PlanProgress(total=10, jobs=2, done=4, running=2, durations=[100.0, 200.0])
    assert p.left == 4 and p.eta_seconds() == pytest.approx(150 * 6 / 2)
    assert "4/10 done, 2 running, 4 left; ETA 7m30s (mean run 2m30s)" in p.line()
    assert "ETA unknown" in ex.PlanProgress(total=3, jobs=1, running=1).line()
    assert ex.PlanProgress(total=2, done=2, durations=[1.0]).line().endswith("left; done")


def test_jobs_share_the_free_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 16)
    monkeypatch.setattr(runtime, "busy_cpus", lambda sample_s=0.2: 3.0)
    assert ex.job_threads(4) == 3 and ex.job_threads(1) == 13 and ex.job_threads(20) == 1
    assert ex.job_threads(4, on_gpu=True) == 0
    monkeypatch.setattr(ex, "_cuda_available", lambda: False)
    launched = []
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: launched.append(cmd) or 0)
    plan = {"rows": [{"name": "a", "overrides": {}}], "reference": "a", "path": "p.json"}
    ex.run_plan(plan, [1, 2, 3, 4], tmp_path, jobs=4, progress=False)
    assert len(launched) == 4 and {c[c.index("--threads") + 1] for c in launched} == {"3"}


def test_progress_lines_while_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ex, "_cuda_available", lambda: False)
    monkeypatch.setattr(ex.runtime, "default_threads", lambda local_processes=1: 1)

    def fake(cmd, log, cwd):   # a run that "finishes": what the trainer leaves behind
        out = Path(cmd[cmd.index("--out") + 1])
        seed = int(cmd[cmd.index("--seed") + 1])
        row = out.parent.name
        _finished(out, ex.Run(row, seed, out, {}))
        return 0
    monkeypatch.setattr(ex, "_execute", fake)
    plan = {"rows": [{"name": "a", "overrides": {}}], "reference": "a", "path": "p.json"}
    res = tmp_path / "results"
    ex.run_plan(plan, [1, 2, 3], tmp_path / "runs", jobs=1, results=res)
    out = capsys.readouterr().out
    assert "3 runs, 0 with results already, 3 to run" in out
    assert "1/3 done, 1 running, 1 left; ETA" in out and "3/3 done, 0 running, 0 left; done" in out
    shutil.rmtree(tmp_path / "runs")
    ex.run_plan(plan, [1, 2, 3, 4], tmp_path / "runs", jobs=1, results=res)
    out = capsys.readouterr().out
    assert "4 runs, 3 with results already, 1 to run" in out
    assert "3/4 done, 1 running, 0 left; ETA" in out        # ETA known from committed run.json


def _finished(out: Path, run: ex.Run) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run.config().save(out / "config.json")
    (out / "final.pt").write_bytes(b"x")
    (out / "metrics.json").write_text(json.dumps({"summary": {
        "finished": True, "seed": run.seed, "best_PublicTest_acc": 0.5, "best_PublicTest_f1": 0.4},
        "epochs": []}))


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def test_paired_delta_matches_scipy_and_the_t_formula():
    a, b = [61.2, 60.4, 62.0, 60.9], [60.0, 60.1, 60.5, 60.2]
    d = np.subtract(a, b)
    r = ps.paired_delta(a, b)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert r["mean"] == pytest.approx(d.mean()) and r["sd"] == pytest.approx(d.std(ddof=1))
    assert (r["lo"], r["hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert ps.paired_delta([1.0], [0.5])["p"] is None
    assert ps.paired_delta([1.0, 2.0], [0.5, 1.5])["p"] is None       # no spread: no test


def test_holm_by_hand():
    # m = 4 tests: sorted 0.01, 0.02, 0.03, 0.2 -> 4*0.01, 3*0.02, max(.06, 2*.03), max(.06, .2)
    assert ps.holm([0.03, 0.2, 0.01, None, 0.02]) == pytest.approx([0.06, 0.2, 0.04, None, 0.06])
    assert ps.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert ps.holm([]) == []


def test_seeds_needed_matches_the_power_tables():
    # two-sided paired t-test, alpha 0.05, power 0.8: effect size 0.5 -> 34 pairs, 1.0 -> 10 (Cohen;
    # G*Power), and close to the normal approximation 7.85 (sd/delta)^2 when n is large
    assert ps.seeds_needed(sd=1.0, delta=0.5) == 34
    assert ps.seeds_needed(sd=1.0, delta=1.0) == 10
    assert ps.seeds_needed(sd=2.0, delta=0.5) == pytest.approx(7.85 * 16, rel=0.02)
    n = ps.seeds_needed(sd=0.8, delta=0.5)
    assert ps.paired_power(n, 0.5, 0.8) >= 0.8 > ps.paired_power(n - 1, 0.5, 0.8)
    assert ps.pooled_sd([[1.0, 3.0], [2.0, 2.0, 2.0], [5.0]]) == pytest.approx(np.sqrt(2 / 3))
    # the detectable difference inverts the power: 34 pairs at s.d. 1 detect 0.5 (just), and the
    # normal approximation 2.80 sd / sqrt(n) holds at large n
    d = ps.detectable_delta(34, 1.0)
    assert 0.48 < d <= 0.5 and ps.paired_power(34, d, 1.0) == pytest.approx(0.8, abs=1e-6)
    assert ps.detectable_delta(400, 2.0) == pytest.approx(2.80 * 2.0 / 20, rel=0.02)
    assert ps.detectable_delta(3, 1.0) > ps.detectable_delta(5, 1.0) > ps.detectable_delta(10, 1.0)
    with pytest.raises(ValueError, match="n >= 2"):
        ps.detectable_delta(1, 1.0)


def test_power_cli_on_results(tmp_path, capsys):
    folder = tmp_path / "results" / "ctl"
    plan = {"rows": [{"name": "ref", "overrides": {}}, {"name": "b", "overrides": {}}], "reference": "ref",
            "label": "ctl"}
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    diffs = [0.5, -0.5, 1.5, 0.5]                      # pp; s.d. 0.8165
    for s, d in enumerate(diffs, 1):
        _finished(folder / "ref" / f"s{s}", ex.Run("ref", s, folder, {}))
        _finished(folder / "b" / f"s{s}", ex.Run("b", s, folder, {}))
        m = folder / "b" / f"s{s}" / "metrics.json"
        j = json.loads(m.read_text())
        j["summary"]["best_PublicTest_acc"] = 0.5 + d / 100
        m.write_text(json.dumps(j))
    assert ex.main(["--power", "ctl", "--results", str(tmp_path / "results"), "--delta", "0.5"]) == 0
    out = capsys.readouterr().out
    sd = float(np.std(diffs, ddof=1))
    assert f"{sd:8.2f}" in out and f"{ps.seeds_needed(sd, 0.5):6d}" in out.splitlines()[-2]
    assert f"5 seeds {ps.detectable_delta(5, sd):.2f} pp" in out.splitlines()[-1]


def test_mcnemar_exact_by_hand():
    row = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    ref = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    r = ps.mcnemar_exact(row, ref)
    # b = 10 discordant for the row, c = 2: two-sided 2 P(X >= 10 | Bin(12, 1/2)) = 2 (66 + 12 + 1) / 4096
    assert (r["b"], r["c"]) == (10, 2) and r["p"] == pytest.approx(158 / 4096)
    assert ps.mcnemar_exact(ref, row)["p"] == pytest.approx(158 / 4096)
    assert ps.mcnemar_exact(row, row) == {"b": 0, "c": 0, "p": 1.0}
    with pytest.raises(ValueError, match="differ in images"):
        ps.mcnemar_exact(row, ref[:-1])


def test_paired_bootstrap_resamples_seeds_then_images():
    rng = np.random.default_rng(3)
    n_img = 2000
    ref = [rng.random(n_img) < 0.5 for _ in range(4)]
    row = [np.where(rng.random(n_img) < 0.8, r, rng.random(n_img) < 0.53) for r in ref]
    got = ps.paired_bootstrap(row, ref, n_boot=4000)
    d = np.array([a.astype(int) - b for a, b in zip(row, ref)])          # (seeds, images)
    assert got["mean"] == pytest.approx(100 * d.mean()) and got["n"] == 4
    # the same distribution as drawing seeds, then image indices, explicitly
    explicit = []
    for _ in range(2000):
        seeds = rng.integers(0, 4, 4)
        explicit.append(100 * np.mean([d[k][rng.integers(0, n_img, n_img)].mean() for k in seeds]))
    lo, hi = np.percentile(explicit, [2.5, 97.5])
    width = hi - lo
    assert abs(got["lo"] - lo) < 0.1 * width and abs(got["hi"] - hi) < 0.1 * width
    # one seed: only the images vary, s.d. of the mean = sd(d) / sqrt(N)
    one = ps.paired_bootstrap(row[:1], ref[:1])
    half = 1.96 * 100 * d[0].std() / np.sqrt(n_img)
    assert (one["lo"], one["hi"]) == pytest.approx((100 * d[0].mean() - half, 100 * d[0].mean() + half), abs=0.05 * half)
    # seeds far apart and many images: the interval spans the seeds' own differences
    big = 200_000
    a = [np.ones(big, bool), np.zeros(big, bool)]
    b = [np.r_[np.ones(big - 10_000, bool), np.zeros(10_000, bool)], np.r_[np.ones(10_000, bool), np.zeros(big - 10_000, bool)]]
    two = ps.paired_bootstrap(a, b)           # seed 1: +5 pp, seed 2: -5 pp
    assert two["mean"] == pytest.approx(0) and two["lo"] == pytest.approx(-5, abs=0.1) and two["hi"] == pytest.approx(5, abs=0.1)
    assert ps.paired_bootstrap(row, ref) == ps.paired_bootstrap(row, ref)     # seeded: reproducible
    same = ps.paired_bootstrap(ref, ref)
    assert (same["lo"], same["hi"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same number"):
        ps.paired_bootstrap(row, ref[:2])
    with pytest.raises(ValueError, match="seed 0"):
        ps.paired_bootstrap([row[0][:5]], [ref[0]])
