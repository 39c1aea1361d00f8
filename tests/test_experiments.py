"""pipelines.experiments: plans as config overrides, resumable runs, the report and its paired test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import experiments as ex
from pipelines.config import Config
from tests.conftest import shared_path


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


def test_bad_plan_is_a_clear_error(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"rows": [{"name": "a", "overrides": {"lerning_rate": 1}}]}))
    with pytest.raises(ValueError, match=r"row 'a': unknown config field\(s\) \['lerning_rate'\]"):
        ex.load_plan(str(p))


def _fake_run(folder: Path, row: str, seed: int, acc: float, f1: float) -> None:
    d = folder / row / f"s{seed}"
    d.mkdir(parents=True)
    (d / "final.pt").write_bytes(b"x")
    (d / "metrics.json").write_text(json.dumps({"summary": {
        "finished": True, "seed": seed, "best_val_acc": acc, "best_val_f1": f1,
        "best_PublicTest_acc": acc, "best_PublicTest_f1": f1, "epochs_run": 3}, "epochs": []}))


def test_report_means_deltas_and_paired_test(tmp_path):
    plan = {"rows": [{"name": "full", "overrides": {}}, {"name": "worse", "overrides": {"augment": False}},
                     {"name": "same", "overrides": {"dale": False}}], "reference": "full", "path": "abl.json"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    full = [0.600, 0.610, 0.605]
    for s, a in enumerate(full, 1):
        _fake_run(tmp_path, "full", s, a, 0.55)
        _fake_run(tmp_path, "worse", s, a - 0.05 - 0.001 * s, 0.50)   # consistently 5 pp lower
        _fake_run(tmp_path, "same", s, a + (0.004, -0.005, 0.001)[s - 1], 0.55)
    ex.write_report([tmp_path], tmp_path)
    rows = {r["row"]: r for r in ex.summarize(*ex.collect(tmp_path))}
    assert rows["full"]["acc_mean"] == pytest.approx(60.5) and rows["full"]["n_seeds"] == 3
    assert rows["worse"]["delta_acc"] == pytest.approx(-5.2)
    assert rows["worse"]["distinguishable"] and rows["worse"]["paired_p"] < 0.01
    assert not rows["same"]["distinguishable"]
    md = (tmp_path / "report.md").read_text()
    assert "| abl | worse | 3 | 55.30 ± 0.46 |" in md
    assert (tmp_path / "report.csv").exists() and (tmp_path / "report.png").stat().st_size > 1000


def test_finished_runs_are_skipped_and_partial_ones_resumed(tmp_path, monkeypatch):
    plan = {"rows": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {}}], "reference": "a",
            "path": "p.json"}
    _fake_run(tmp_path, "a", 1, 0.5, 0.4)
    (tmp_path / "b" / "s1").mkdir(parents=True)
    (tmp_path / "b" / "s1" / "last.pt").write_bytes(b"x")
    launched = []
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: launched.append(cmd) or 0)
    ex.run_plan(plan, [1, 2], tmp_path, jobs=2, progress=False)
    dirs = sorted(c[c.index("--resume") + 1] if "--resume" in c else c[c.index("--out") + 1] for c in launched)
    assert dirs == [str(tmp_path / "a" / "s2"), str(tmp_path / "b" / "s1"), str(tmp_path / "b" / "s2")]
    resumed = [c for c in launched if "--resume" in c]
    assert len(resumed) == 1 and "--seed" not in resumed[0]


def test_tiny_plan_end_to_end(tmp_path):
    """Two rows x 2 seeds of real (tiny) training on the FER sample, then a rerun that skips all."""
    data = shared_path("fer2013", "sample.csv")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"base": {"preset": "paper"}, "reference": "full", "rows": [
        {"name": "full", "overrides": {}}, {"name": "no_hebbian", "overrides": {"hebbian_rate": 0.0}}]}))
    out = tmp_path / "runs"
    common = ["--set", f"data={data}", f"cache_root={tmp_path / 'cache'}", "epochs=1", "batch_size=64",
              "plots=false"]
    assert ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), "--jobs", "2", *common]) == 0
    assert sorted(p.parent.name + "/" + p.name for p in out.glob("*/s*")) == [
        "full/s1", "full/s2", "no_hebbian/s1", "no_hebbian/s2"]
    cfg = Config.load(out / "no_hebbian" / "s2" / "config.json")
    assert cfg.hebbian_rate == 0.0 and cfg.seed == 2 and cfg.preset == "paper"
    mtimes = {p: p.stat().st_mtime for p in out.glob("*/s*/final.pt")}
    assert ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), *common]) == 0
    assert {p: p.stat().st_mtime for p in out.glob("*/s*/final.pt")} == mtimes
    assert ex.main(["--report", str(out)]) == 0
    assert np.isfinite(json.loads((out / "full" / "s1" / "metrics.json").read_text())["summary"]["best_val_acc"])


def test_runs_go_to_dask_workers_and_into_one_report(tmp_path):
    """--scheduler: runs are executed by the workers of a (local, 2-worker) Dask cluster."""
    import distributed

    data = shared_path("fer2013", "sample.csv")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"base": {"preset": "cnn"}, "rows": [{"name": "cnn", "overrides": {}}]}))
    out = tmp_path / "runs"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        code = ex.main(["--plan", str(plan), "--seeds", "2", "--out", str(out), "--scheduler",
                        cluster.scheduler_address, "--set", f"data={data}",
                        f"cache_root={tmp_path / 'cache'}", "epochs=1", "batch_size=64", "plots=false"])
    assert code == 0
    assert ex.main(["--report", str(out)]) == 0
    assert "| plan | cnn | 2 |" in (out / "report.md").read_text()
