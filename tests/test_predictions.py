"""Per-image predictions of a run's best and final checkpoints (pipelines.predictions): written
at the end of training and by ``pipelines.evaluate --predictions``, read back by the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import evaluate
from pipelines import predictions as P
from pipelines.config import Config
from pipelines.evaluate import confusion_matrix
from pipelines.fer2013 import CLASSES, FER2013, USAGES
from pipelines.runtime import runtime_of
from pipelines.train import train
from tests.conftest import tiny_cfg, train_env


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Config:
    root = tmp_path_factory.mktemp("predrun")
    cfg = tiny_cfg(train_env(root), "run", epochs=3)
    train(cfg)
    return cfg


def test_a_finished_run_stores_both_checkpoints_predictions(finished_run):
    out = Path(finished_run.out)
    path = out / "predictions.npz"
    assert path.is_file() and path.stat().st_size < 10_000
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(["classes", "usages", "best_epoch", "final_epoch", "tta_flip"] + [
            f"{u}_{k}" for u in ("PublicTest", "PrivateTest") for k in ("label", "best", "final")])
        assert all(z[f"PublicTest_{k}"].dtype == np.int8 for k in ("label", "best", "final"))
    pred = P.load_predictions(out)
    metrics = json.loads((out / "metrics.json").read_text())
    summary, epochs = metrics["summary"], metrics["epochs"]
    assert pred["usages"] == ["PublicTest", "PrivateTest"] and pred["classes"] == list(CLASSES)
    assert pred["best_epoch"] == summary["best_epoch"] and pred["final_epoch"] == 3
    assert len(pred["PublicTest"]["label"]) == 32 and len(pred["PrivateTest"]["label"]) == 16
    for usage in ("PublicTest", "PrivateTest"):
        p = pred[usage]
        # best: exactly the confusion matrix the best checkpoint's report counted
        best_rep = json.loads((out / f"eval_{usage}.json").read_text())
        assert confusion_matrix(p["label"], p["best"]).tolist() == best_rep["confusion_matrix"]
        final_rep = json.loads((out / f"eval_{usage}_final.json").read_text())
        assert confusion_matrix(p["label"], p["final"]).tolist() == final_rep["confusion_matrix"]
        assert final_rep["checkpoint"] == "final" and final_rep["epoch"] == 3
        assert summary[f"final_{usage}_acc"] == pytest.approx(np.mean(p["final"] == p["label"]))
        assert summary[f"final_{usage}_f1"] == pytest.approx(final_rep["macro_f1"])
    # final on the selection usage: what the last epoch's validation measured
    assert summary["final_PublicTest_acc"] == pytest.approx(epochs[-1]["val_acc"])
    assert np.array_equal(P.correct(pred, "PublicTest", "best"),
                          pred["PublicTest"]["best"] == pred["PublicTest"]["label"])
    assert P.correct(None, "PublicTest", "best") is None and P.correct(pred, "Training", "best") is None


def test_evaluate_predictions_rebuilds_the_file_of_a_run_folder(finished_run, tmp_path, capsys):
    out = tmp_path / "again"
    assert evaluate.main(["--run", finished_run.out, "--predictions", "--out", str(out), "--device", "cpu"]) == 0
    assert "predictions.npz: final_PublicTest_acc" in capsys.readouterr().out
    a, b = P.load_predictions(finished_run.out), P.load_predictions(out)
    for u in ("PublicTest", "PrivateTest"):
        for k in ("label", "best", "final"):
            assert np.array_equal(a[u][k], b[u][k]), (u, k)
    assert (a["best_epoch"], a["final_epoch"]) == (b["best_epoch"], b["final_epoch"])
    assert (out / "eval_PublicTest_final.json").is_file()
    # a run without final.pt: one line, exit 2
    run = tmp_path / "unfinished"
    run.mkdir()
    for f in ("config.json", "best.pt"):
        (run / f).write_bytes(Path(finished_run.out, f).read_bytes())
    assert evaluate.main(["--run", str(run), "--predictions"]) == 2
    err = capsys.readouterr().err
    assert "final.pt: missing" in err and len(err.strip().splitlines()) == 1


class _Linear(torch.nn.Module):
    """Logits from the mean brightness: its weights decide which class wins."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return x.mean((1, 2, 3))[:, None] * self.w[None, :]


def test_store_predictions_takes_best_from_best_state_and_final_from_the_model(tmp_path):
    rng = np.random.default_rng(0)
    n = {"Training": 5, "PublicTest": 9, "PrivateTest": 4}
    usage = np.concatenate([[USAGES.index(u)] * k for u, k in n.items()]).astype(np.uint8)
    ds = FER2013(images=rng.integers(0, 256, (len(usage), 48, 48), dtype=np.uint8),
                 labels=rng.integers(0, 7, len(usage)).astype(np.uint8), usage=usage)
    cfg = Config(limit_val=6, eval_batch_size=4, threads=1)
    rt = runtime_of(cfg, device="cpu", threads=1)
    model = _Linear([0.0, 0, 0, 1, 0, 0, 0])                 # final: class 3 wins for bright images
    best = {"w": torch.tensor([0.0, 0, 0, 0, 0, -1, 0])}     # best: class 5 wins for dark ones
    final_w = model.w.detach().clone()
    figures = P.store_predictions(tmp_path, model, best, ds, cfg, rt, best_epoch=2, final_epoch=7)
    assert torch.equal(model.w.detach(), final_w)             # the model holds the final weights again
    pred = P.load_predictions(tmp_path)
    x = torch.as_tensor(ds.images).float()
    for u in ("PublicTest", "PrivateTest"):
        idx = np.flatnonzero(usage == USAGES.index(u))[:6]     # limit_val: the first 6 of each usage
        bright = (x[idx] / 255 - 0.5).mean((1, 2))             # sign of the normalised mean
        assert np.array_equal(pred[u]["label"], ds.labels[idx])
        want_final = np.where(bright.numpy() > 0, 3, 0)
        want_best = np.where(bright.numpy() < 0, 5, 0)
        assert np.array_equal(pred[u]["final"], want_final) and np.array_equal(pred[u]["best"], want_best)
        assert figures[f"final_{u}_acc"] == pytest.approx(np.mean(want_final == ds.labels[idx]))
    assert (pred["best_epoch"], pred["final_epoch"], pred["tta_flip"]) == (2, 7, False)


def test_load_predictions_absent_or_malformed(tmp_path):
    assert P.load_predictions(tmp_path) is None
    (tmp_path / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"predictions\.npz: not a predictions file"):
        P.load_predictions(tmp_path)
    arrays = {"PublicTest_label": np.zeros(3), "PublicTest_best": np.zeros(3), "PublicTest_final": np.zeros(2)}
    with pytest.raises(ValueError, match="differ in length"):
        P.save_predictions(tmp_path / "predictions.npz", arrays, ["PublicTest"], best_epoch=1,
                           final_epoch=1, tta_flip=False)
    with pytest.raises(ValueError, match="need exactly"):
        P.save_predictions(tmp_path / "predictions.npz", {"PublicTest_label": np.zeros(3)}, ["PublicTest"],
                           best_epoch=1, final_epoch=1, tta_flip=False)
    np.savez(tmp_path / "predictions.npz", usages=np.array(["PublicTest"]))
    with pytest.raises(ValueError, match="not a predictions file"):
        P.load_predictions(tmp_path)
