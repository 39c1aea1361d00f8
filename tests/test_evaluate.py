"""Metrics and the evaluation CLI (CSV and image-folder data, any Usage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines import evaluate
from pipelines.evaluate import confusion_matrix, report
from pipelines.train import train
from tests.test_fer2013 import make_folder
from tests.test_train import synthetic_csv, tiny_cfg


def test_report_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    p = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0, 5])
    cm = confusion_matrix(y, p)
    assert cm.shape == (7, 7) and cm.sum() == 10 and cm[0, 0] == 2 and cm[3, 5] == 1
    r = report(cm)
    assert r["accuracy"] == pytest.approx(0.6)
    pc = r["per_class"]
    assert pc["angry"]["precision"] == pytest.approx(2 / 3) and pc["angry"]["recall"] == pytest.approx(2 / 3)
    assert pc["disgust"]["precision"] == pytest.approx(1 / 2) and pc["disgust"]["recall"] == pytest.approx(1 / 2)
    assert pc["fear"]["precision"] == pytest.approx(3 / 4) and pc["fear"]["recall"] == pytest.approx(3 / 4)
    assert pc["happy"]["recall"] == 0 and pc["happy"]["support"] == 1
    assert pc["surprise"]["precision"] == 0 and pc["surprise"]["support"] == 0
    # macro F1 over the 5 classes seen in labels or predictions (angry, disgust, fear, happy, surprise)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4 + 0 + 0) / 5)
    assert r["confusion_matrix"] == cm.tolist()


def test_evaluate_cli_on_csv_and_image_folder_any_usage(tmp_path):
    data = synthetic_csv(tmp_path / "fer.csv")
    env = (tmp_path, data, tmp_path / "nograph")
    cfg = tiny_cfg(env, "run", model="cnn", graph="", epochs=1, cnn_hidden=16)
    train(cfg)
    # the same images as an image folder (PNG: lossless)
    from pipelines.fer2013 import USAGES, load_fer2013

    ds = load_fer2013(data, cfg.cache_root)
    names = [f"{USAGES[u]}_{i}.png" for i, u in enumerate(ds.usage)]
    make_folder(tmp_path / "folder", ds.images, ds.labels, names)
    model, _, _ = evaluate.load_run_model(cfg.out, "best")
    x, y = ds.split("PrivateTest")
    with torch.no_grad():
        model.eval()
        from pipelines.augment import normalize, to_float
        want = (model(normalize(to_float(torch.as_tensor(x)))).argmax(1).numpy() == y).mean()
    for src, out in ((data, "ev_csv"), (tmp_path / "folder", "ev_folder")):
        assert evaluate.main(["--run", cfg.out, "--data", str(src), "--usage", "PrivateTest",
                              "--out", str(tmp_path / out), "--cache_root", cfg.cache_root,
                              "--device", "cpu"]) == 0
        rep = json.loads((tmp_path / out / "eval_PrivateTest.json").read_text())
        assert rep["n"] == 16 and rep["accuracy"] == pytest.approx(want)
        assert (tmp_path / out / "confusion_PrivateTest.png").exists()
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        evaluate.main(["--run", cfg.out, "--checkpoint", "nope.pt"])
