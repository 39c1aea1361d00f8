"""pipelines.experiments: plans as config overrides, resumable runs, the report and its paired test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import experiments as ex
from pipelines import plan_report as rep
from pipelines.config import Config


def test_shipped_plans_are_valid_overrides():
    abl = ex.load_plan("ablations")
    ctl = ex.load_plan("controls")
    assert abl["reference"] == "full" and len(abl["rows"]) == 15
    assert {r["overrides"].get("mask") for r in ctl["rows"]} == {"connectome", "random", "degree_shuffle",
                                                                 "label_shuffle", "dense"}
    runs = ex.expand(abl, [1, 2, 3], Path("/x"))
    assert len(runs) == 45 and runs[3].out == Path("/x/no_connectome_mask/s1")
    cmd = runs[3].command()
    assert cmd[cmd.index("--mask") + 1] == "dense" and cmd[cmd.index("--preset") + 1] == "paper"
    paper = {r["name"]: r.get("paper_delta") for r in abl["rows"]}
    assert paper["no_augmentation"] == -22.82 and paper["no_hebbian"] is None
    assert ex.plan_overrides(ctl, "screen", {"lr": 1e-3}) == {"epochs": 8, "warmup_epochs": 1, "lr": 1e-3}
    # no time guard in either recipe: a run trains all its steps however busy the machine is
    assert {r.config().max_minutes for r in ex.expand(abl, [1], Path("/x"))} == {0.0}
    assert {r.config().epochs for r in ex.expand(ctl, [1], Path("/x"))} == {36}
    assert ex.plan_label(ctl, "screen") == "controls_screen"
    sub = ex.select_rows(ctl, "dense_no_mask, random_density_matched")
    assert [r["name"] for r in sub["rows"]] == ["connectome", "random_density_matched", "dense_no_mask"]
    with pytest.raises(ValueError, match=r"no row\(s\) \['dens'\]"):
        ex.select_rows(ctl, "dens")
    with pytest.raises(ValueError, match="no recipe 'fast'"):
        ex.plan_overrides(ctl, "fast", None)


def test_bad_plan_is_a_clear_error(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"rows": [{"name": "a", "overrides": {"lerning_rate": 1}}]}))
    with pytest.raises(ValueError, match=r"row 'a': unknown config field\(s\) \['lerning_rate'\]"):
        ex.load_plan(str(p))


def _fake_run(folder: Path, row: str, seed: int, acc: float, f1: float, overrides: dict | None = None) -> None:
    """A finished run folder (config of ``overrides`` + seed, metrics summary, final.pt)."""
    d = folder / row / f"s{seed}"
    d.mkdir(parents=True)
    (d / "final.pt").write_bytes(b"x")
    ex.Run(row, seed, d, overrides or {}).config().save(d / "config.json")
    (d / "metrics.json").write_text(json.dumps({"summary": {
        "finished": True, "seed": seed, "best_val_acc": acc, "best_val_f1": f1,
        "best_PublicTest_acc": acc, "best_PublicTest_f1": f1, "epochs_run": 3},
        "epochs": [{"epoch": 1, "epoch_seconds": 60.0 * seed}]}))


def test_report_means_deltas_ci_holm_and_paper(tmp_path):
    from scipy import stats

    plan = {"rows": [{"name": "full", "overrides": {}},
                     {"name": "worse", "overrides": {"augment": False}, "paper_delta": -22.82},
                     {"name": "same", "overrides": {"dale": False}}], "reference": "full", "path": "abl.json"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    full = [0.600, 0.610, 0.605]
    for s, a in enumerate(full, 1):
        _fake_run(tmp_path, "full", s, a, 0.55)
        _fake_run(tmp_path, "worse", s, a - 0.05 - 0.001 * s, 0.50, {"augment": False})  # 5 pp lower
        _fake_run(tmp_path, "same", s, a + (0.004, -0.005, 0.001)[s - 1], 0.55, {"dale": False})
    rep.write_report(tmp_path)
    rows = {r["row"]: r for r in rep.summarize(*rep.collect(tmp_path))}
    assert rows["full"]["acc_mean"] == pytest.approx(60.5) and rows["full"]["n_seeds"] == 3
    w = rows["worse"]
    d = np.array([-5.1, -5.2, -5.3])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert w["delta_acc"] == pytest.approx(-5.2)
    assert (w["delta_lo"], w["delta_hi"]) == pytest.approx((-5.2 - half, -5.2 + half))
    p_worse = stats.ttest_rel([54.9, 55.8, 55.2], [60.0, 61.0, 60.5]).pvalue
    p_same = stats.ttest_rel([60.4, 60.5, 60.6], [60.0, 61.0, 60.5]).pvalue
    assert w["paired_p"] == pytest.approx(p_worse)
    assert w["holm_p"] == pytest.approx(min(1, 2 * min(p_worse, p_same)))      # 2 comparisons
    assert rows["same"]["holm_p"] == pytest.approx(max(2 * min(p_worse, p_same), max(p_worse, p_same)))
    assert w["significant"] and not rows["same"]["significant"]
    assert w["delta_f1"] == pytest.approx(-0.05) and w["paper_delta"] == -22.82
    md = (tmp_path / "report.md").read_text()
    # no final-epoch figures and no predictions in these runs: "–", never an error
    assert (f"| worse | 3 | 55.30 ± 0.46 | – | 0.5000 ± 0.0000 | -5.20 [{-5.2 - half:+.2f}, "
            f"{-5.2 + half:+.2f}] | – | {p_worse:.2g} |") in md
    table = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if ln.startswith("| ")}
    assert table["worse"].endswith("| -0.0500 | -22.82 |")
    assert table["full"].endswith("| – |") and table["same"].endswith("| +0.0000 | – |")  # no paper Δ
    assert (tmp_path / "report.csv").exists() and (tmp_path / "report.png").stat().st_size > 1000


def test_report_leaves_out_a_result_of_another_config(tmp_path, capsys):
    plan = {"rows": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {"lr": 0.01}}],
            "reference": "a", "path": "p.json"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    _fake_run(tmp_path, "a", 1, 0.5, 0.4)
    _fake_run(tmp_path, "b", 1, 0.6, 0.4, {"lr": 0.02})     # run with another lr than the plan says
    plan_, records = rep.collect(tmp_path)
    assert [r["row"] for r in records] == ["a"]
    assert "config differs from the plan (lr)" in capsys.readouterr().err


def test_finished_runs_are_skipped_and_partial_ones_resumed(tmp_path, monkeypatch):
    plan = {"rows": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {}}], "reference": "a",
            "path": "p.json"}
    _fake_run(tmp_path, "a", 1, 0.5, 0.4)
    b1 = tmp_path / "b" / "s1"
    b1.mkdir(parents=True)
    (b1 / "last.pt").write_bytes(b"x")
    ex.Run("b", 1, b1, {}).config().save(b1 / "config.json")
    launched = []
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: launched.append(cmd) or 0)
    ex.run_plan(plan, [1, 2], tmp_path, jobs=2, progress=False)
    dirs = sorted(c[c.index("--resume") + 1] if "--resume" in c else c[c.index("--out") + 1] for c in launched)
    assert dirs == [str(tmp_path / "a" / "s2"), str(tmp_path / "b" / "s1"), str(tmp_path / "b" / "s2")]
    resumed = [c for c in launched if "--resume" in c]
    assert len(resumed) == 1 and "--seed" not in resumed[0]


def test_a_run_folder_of_another_config_is_moved_aside_not_reused(tmp_path, monkeypatch):
    plan = {"rows": [{"name": "a", "overrides": {"lr": 0.01}}], "reference": "a", "path": "p.json"}
    _fake_run(tmp_path, "a", 1, 0.5, 0.4, {"lr": 0.02})
    launched = []
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: launched.append(cmd) or 0)
    ex.run_plan(plan, [1], tmp_path, progress=False)
    assert len(launched) == 1 and "--resume" not in launched[0]
    assert launched[0][launched[0].index("--lr") + 1] == "0.01"
    assert len(list(tmp_path.glob("a/s1.stale-*"))) == 1 and not (tmp_path / "a" / "s1").exists()


def test_tiny_plan_end_to_end(tmp_path, train_env):
    """Two rows x 2 seeds of real (tiny) training of the paper preset on a small synthetic data set
    and graph (``train_env``), then a rerun that skips all."""
    _, data, graph = train_env
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"base": {"preset": "paper"}, "reference": "full", "rows": [
        {"name": "full", "overrides": {}}, {"name": "no_hebbian", "overrides": {"hebbian_rate": 0.0}}]}))
    out = tmp_path / "runs"
    common = ["--results", str(tmp_path / "results"), "--set", f"data={data}", f"graph={graph}",
              f"cache_root={tmp_path / 'cache'}", "epochs=1", "batch_size=64", "plots=false"]
    assert ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), "--jobs", "2", *common]) == 0
    assert sorted(p.parent.name + "/" + p.name for p in out.glob("*/s*")) == [
        "full/s1", "full/s2", "no_hebbian/s1", "no_hebbian/s2"]
    cfg = Config.load(out / "no_hebbian" / "s2" / "config.json")
    assert cfg.hebbian_rate == 0.0 and cfg.seed == 2 and cfg.preset == "paper"
    mtimes = {p: p.stat().st_mtime for p in out.glob("*/s*/final.pt")}
    assert ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), *common]) == 0
    assert {p: p.stat().st_mtime for p in out.glob("*/s*/final.pt")} == mtimes
    assert ex.main(["--report", str(out)]) == 0
    assert (tmp_path / "results" / "plan" / "no_hebbian" / "s2" / "eval_PublicTest.json").is_file()
    assert np.isfinite(json.loads((out / "full" / "s1" / "metrics.json").read_text())["summary"]["best_val_acc"])


def test_runs_go_to_dask_workers_and_into_one_report(tmp_path, train_env):
    """--scheduler: runs are executed by the workers of a (local, 2-worker) Dask cluster."""
    import distributed

    _, data, _ = train_env
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"base": {"preset": "cnn"}, "rows": [{"name": "cnn", "overrides": {}}]}))
    out = tmp_path / "runs"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        code = ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), "--results",
                        str(tmp_path / "results"), "--scheduler",
                        cluster.scheduler_address, "--set", f"data={data}",
                        f"cache_root={tmp_path / 'cache'}", "epochs=1", "batch_size=64", "plots=false"])
    assert code == 0
    assert ex.main(["--report", str(out)]) == 0
    assert "| cnn | 2 |" in (out / "report.md").read_text()


def test_every_shipped_plan_loads_and_names_its_family_from_its_rows():
    for path in sorted(ex.PLANS_DIR.glob("*.json")):
        plan = ex.load_plan(path.stem)
        names = [r["name"] for r in plan["rows"]]
        assert plan["reference"] in names, path.name
        assert set(plan.get("family", [])) <= set(names) - {plan["reference"]}, path.name


def test_inhibition_pattern_reuses_the_matched_screens_real_and_shuffled_runs():
    """Its connectome and weight_shuffle rows are controls_matched's configs, so their screen runs
    are reused rather than trained again; its new rows change only graded inhibition."""
    mech, matched = ex.load_plan("inhibition_pattern"), ex.load_plan("controls_matched")
    extra = ex.plan_overrides(mech, "screen", None)
    assert extra == ex.plan_overrides(matched, "screen", None)
    runs = {r.row: r for r in ex.expand(mech, [1], Path("/x"), extra)}
    ref = {r.row: r for r in ex.expand(matched, [1], Path("/x"), extra)}
    for row in ("connectome", "weight_shuffle"):
        assert runs[row].expected() == ref[row].expected(), row
    c = runs["connectome"].config().column
    assert runs["strength_0.7"].config().column == dataclasses.replace(c, inhibition_strength=0.7)
    assert runs["no_graded_inhibition"].config().column == dataclasses.replace(c, graded_inhibition=False)
