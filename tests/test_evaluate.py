"""Metrics and the evaluation CLI (CSV and image-folder data, any Usage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines import evaluate
from pipelines.checkpoint import CheckpointError, load_run
from pipelines.evaluate import confusion_matrix, report
from pipelines.train import train
from tests.helpers import make_folder, synthetic_csv, tiny_cfg


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


def test_evaluate_cli_on_csv_and_image_folder_any_usage(tmp_path, capsys):
    data = synthetic_csv(tmp_path / "fer.csv")
    env = (tmp_path, data, tmp_path / "nograph")
    cfg = tiny_cfg(env, "run", model="cnn", graph="", epochs=1, cnn_hidden=16)
    train(cfg)
    # the same images as an image folder (PNG: lossless)
    from pipelines.fer2013 import USAGES, load_fer2013

    ds = load_fer2013(data, cfg.cache_root)
    names = [f"{USAGES[u]}_{i}.png" for i, u in enumerate(ds.usage)]
    make_folder(tmp_path / "folder", ds.images, ds.labels, names)
    model, _, _ = load_run(cfg.out, "best")
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
        assert rep["tta_flip"] is False                       # the run's config
    assert evaluate.main(["--run", cfg.out, "--data", str(data), "--usage", "PrivateTest", "--out",
                          str(tmp_path / "ev_tta"), "--cache_root", cfg.cache_root, "--tta_flip", "true"]) == 0
    rep = json.loads((tmp_path / "ev_tta" / "eval_PrivateTest.json").read_text())
    assert rep["tta_flip"] is True and rep["n"] == 16
    capsys.readouterr()
    assert evaluate.main(["--run", cfg.out, "--checkpoint", "nope.pt"]) == 2   # one line, exit 2
    err = capsys.readouterr().err
    assert "nope.pt: no such checkpoint" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        evaluate.main(["--run", cfg.out, "--checkpoint", "nope.pt", "--debug"])


class _HalfModel(torch.nn.Module):
    """Logits from the mean of the left and right image halves: a mirror swaps them."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[2.0, -1.0]] + [[0.1 * k, 0.3 - 0.1 * k] for k in range(6)]))

    def forward(self, x):
        halves = torch.stack([x[..., :24].mean((1, 2, 3)), x[..., 24:].mean((1, 2, 3))], 1)   # (B, 2)
        return halves @ self.w.t()                                                          # (B, 7)


def test_tta_flip_averages_the_probabilities_of_image_and_mirror():
    from pipelines.augment import normalize, to_float
    from pipelines.evaluate import evaluate_arrays

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 48, 48), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 7, (40,), generator=g)
    model = _HalfModel()
    cm0, loss0 = evaluate_arrays(model, images, labels, batch_size=16)
    cm1, loss1 = evaluate_arrays(model, images, labels, batch_size=16, tta_flip=True)
    with torch.no_grad():
        x = normalize(to_float(images))
        p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    want = torch.bincount(labels * 7 + p.argmax(1), minlength=49).reshape(7, 7).numpy()
    assert (cm1 == want).all() and not (cm1 == cm0).all()
    assert loss1 == pytest.approx(float(-p.log()[torch.arange(40), labels].sum()), rel=1e-5)
    # a mirror-symmetric model: the same predictions with or without TTA
    sym = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))
    with torch.no_grad():
        w = sym[1].weight.view(7, 48, 48)
        w.copy_((w + w.flip(-1)) / 2)
    assert (evaluate_arrays(sym, images, labels)[0] == evaluate_arrays(sym, images, labels, tta_flip=True)[0]).all()
