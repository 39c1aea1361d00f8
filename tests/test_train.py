"""The training loop on CPU with tiny models: run files, resume == uninterrupted, NaN handling,
a 1-epoch smoke run on the shared sample, and evaluation of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.config import Config
from pipelines.train import TrainingDiverged, main, train
from tests.helpers import load_checkpoint as load
from tests.helpers import small_graph, states_equal, tiny_cfg


SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLE = SHARED / "data" / "fer2013" / "sample.csv"


def test_run_directory_contents_and_metrics(train_env):
    cfg = tiny_cfg(train_env, "full", plots=True)
    s = train(cfg)
    out = Path(cfg.out)
    for f in ("config.json", "metrics.csv", "metrics.json", "curves.png", "eval_PublicTest.json",
              "confusion_PublicTest.png", "eval_PrivateTest.json", "confusion_PrivateTest.png",
              "last.pt", "best.pt", "final.pt", "graph/nodes.parquet"):
        assert (out / f).exists(), f
    assert Config.load(out / "config.json") == cfg
    m = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3]
    assert m["epochs"][-1]["step"] == 3 * (96 // 16)
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1"} <= set(header)
    best = load(out / "best.pt")
    assert best["epoch"] == s["best_epoch"]
    assert s["best_val_acc"] == max(e["val_acc"] for e in m["epochs"])
    final = load(out / "final.pt")
    assert final["state"]["finished"] and final["state"]["epoch"] == 3
    # the Hebbian/homeostatic step ran: thresholds moved away from 0
    th = [v for k, v in final["model"].items() if k.endswith("threshold")]
    assert th and any(t.abs().sum() > 0 for t in th)
    # PrivateTest is reported, never used for selection
    assert "PrivateTest" not in json.dumps(m["epochs"])
    rep = json.loads((out / "eval_PrivateTest.json").read_text())
    assert rep["n"] == 16 and len(rep["confusion_matrix"]) == 7


def test_same_seed_same_weights_and_resume_equals_uninterrupted(train_env):
    first = tiny_cfg(train_env, "ref")
    train(first)
    ref = load(Path(first.out) / "final.pt")
    again = tiny_cfg(train_env, "again")
    train(again)
    assert states_equal(ref["model"], load(Path(again.out) / "final.pt")["model"]) == []

    # killed after epoch 1, resumed from the CLI
    cut = tiny_cfg(train_env, "cut", stop_after_epoch=1)
    assert train(cut)["stopped"]
    assert not (Path(cut.out) / "final.pt").exists() and load(Path(cut.out) / "last.pt")["state"]["epoch"] == 1
    assert main(["--resume", cut.out]) == 0
    got = load(Path(cut.out) / "final.pt")
    assert states_equal(ref["model"], got["model"]) == []
    timing = ("epoch_seconds", "train_images_per_s")
    strip = lambda h: [{k: v for k, v in e.items() if k not in timing} for e in h]  # noqa: E731
    assert strip(got["state"]["history"]) == strip(ref["state"]["history"])

    # an exception in the middle of epoch 2 (step 8 of 6 per epoch), then resume
    crash = tiny_cfg(train_env, "crash")

    def boom(step, model):
        if step == 8:
            raise KeyboardInterrupt("simulated kill")
    with pytest.raises(KeyboardInterrupt):
        train(crash, hooks={"before_step": boom})
    assert load(Path(crash.out) / "last.pt")["state"]["epoch"] == 1
    train(crash, resume=True)
    assert states_equal(ref["model"], load(Path(crash.out) / "final.pt")["model"]) == []

    # a different seed gives different weights; resuming a finished run does nothing
    other = tiny_cfg(train_env, "other", seed=2)
    train(other)
    assert states_equal(ref["model"], load(Path(other.out) / "final.pt")["model"]) != []
    assert train(crash, resume=True)["finished"]


def test_refuses_to_overwrite_or_resume_nothing(train_env):
    cfg = tiny_cfg(train_env, "exists", epochs=1)
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)
    with pytest.raises(FileNotFoundError, match="no last.pt"):
        train(tiny_cfg(train_env, "nothing"), resume=True)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(train_env):
    # plasticity off: with Hebbian or homeostasis on, the plasticity step catches the NaN first
    cfg = tiny_cfg(train_env, "nan", epochs=4, hebbian_rate=0.0, homeostasis=False)

    def poison(step, model):
        if step == 7:                                   # epoch 2, second step
            with torch.no_grad():
                model.head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 2, step 7: non-finite loss.*last good checkpoint is .*last.pt \(end of epoch 1\)"):
        train(cfg, hooks={"before_step": poison})
    last = load(Path(cfg.out) / "last.pt")
    assert last["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (Path(cfg.out) / "final.pt").exists()
    # the CLI turns it into exit status 2 with the message on stderr
    cfg2 = tiny_cfg(train_env, "nan_cli", epochs=2, lr=1e30, grad_clip=0.0, hebbian_rate=0.0,
                    homeostasis=False)
    from pipelines.config import cli_fields

    assert main(sum(([f"--{k}", str(getattr(cfg2, k))] for k in cli_fields()), [])) == 2


def test_plasticity_floating_point_error_stops_the_run(train_env):
    cfg = tiny_cfg(train_env, "fpe", epochs=2)

    def break_plasticity(step, model):
        if step == 2:
            def raise_fpe():
                raise FloatingPointError("Hebbian update of A->B is not finite")
            model.plasticity_step = raise_fpe
    with pytest.raises(TrainingDiverged, match="at epoch 1, step 2: plasticity step: Hebbian update of A->B is not finite"):
        train(cfg, hooks={"before_step": break_plasticity})


def test_cnn_preset_trains_without_a_graph(train_env):
    cfg = tiny_cfg(train_env, "cnn", model="cnn", graph="", epochs=1, cnn_hidden=16, dropout=0.1)
    s = train(cfg)
    assert s["finished"] and s["parameters"]["total"] < 50_000
    assert not (Path(cfg.out) / "graph").exists()


def test_default_graph_hook_is_used_without_graph(train_env, monkeypatch):
    import connectomics.build

    calls = []

    def fake_default(cache_root="data_cache", seed=0, progress=False, source="column"):
        calls.append((cache_root, seed, source))
        return small_graph()
    monkeypatch.setattr(connectomics.build, "build_default_graph", fake_default)
    assert Config().graph_source == "column"  # the real MICrONS column by default
    cfg = tiny_cfg(train_env, "defgraph", graph="", epochs=1, graph_seed=3, graph_source="surrogate")
    train(cfg)
    assert calls == [(cfg.cache_root, 3, "surrogate")]
    assert (Path(cfg.out) / "graph" / "nodes.parquet").exists()


@pytest.mark.skipif(not SAMPLE.exists(), reason=f"FER-2013 sample not available at {SAMPLE}")
def test_one_epoch_smoke_on_sample_with_paper_preset_then_evaluate(train_env, tmp_path):
    from pipelines import evaluate

    root, _, graph_dir = train_env
    out = tmp_path / "paper"
    rc = main(["--preset", "paper", "--data", str(SAMPLE), "--cache_root", str(root / "cache"),
               "--graph", str(graph_dir), "--epochs", "1", "--out", str(out), "--progress", "false",
               "--batch_size", "64", "--limit_train", "256", "--threads", "1"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["summary"]["epochs_run"] == 1 and m["epochs"][0]["step"] == 256 // 64
    assert 0 <= m["epochs"][0]["val_acc"] <= 1
    cfg = Config.load(out / "config.json")
    assert cfg.preset == "paper" and cfg.lateral_inhibition and cfg.attention and cfg.hebbian_rate > 0
    # evaluate the run on the synthetic file's PrivateTest rows, into another folder
    rc = evaluate.main(["--run", str(out), "--data", str(root / "fer.csv"), "--usage", "PrivateTest",
                        "--out", str(tmp_path / "ev"), "--cache_root", str(root / "cache")])
    assert rc == 0
    rep = json.loads((tmp_path / "ev" / "eval_PrivateTest.json").read_text())
    assert rep["n"] == 16 and rep["usage"] == "PrivateTest"
    assert (tmp_path / "ev" / "confusion_PrivateTest.png").stat().st_size > 1000


def test_time_budget_stops_after_the_epoch_that_uses_it(train_env):
    cfg = tiny_cfg(train_env, "budget", epochs=5, max_minutes=1e-6)
    s = train(cfg)
    assert s["finished"] and s["epochs_run"] == 1
    assert (Path(cfg.out) / "final.pt").exists()
