"""The new columns train through ``pipelines.train``: the count-weighted feedforward column and
the recurrent E/I column (tiny runs), and exploding recurrent dynamics stop the run naming the
step and the population."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphnet import ColumnSpec
from pipelines.config import make_config
from pipelines.train import TrainingDiverged, train
from tests.conftest import tiny_cfg, train_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return train_env(tmp_path_factory.mktemp("schemes"))


def _summary(cfg) -> dict:
    train(cfg)
    return json.loads((Path(cfg.out) / "metrics.json").read_text())


def test_count_weighted_column_trains_and_keeps_its_counts(env):
    cfg = tiny_cfg(env, "counts", weights="counts", hebbian_rate=0.0, epochs=2)
    m = _summary(cfg)
    assert m["summary"]["finished"] and len(m["epochs"]) == 2
    import torch

    ck = torch.load(Path(cfg.out) / "final.pt", map_location="cpu", weights_only=True)
    state = ck["model"]
    # the column's connectome part is a scale per population pair, not a weight per edge: apart
    # from the dense input projection (features -> A) it holds a few dozen numbers
    column = {k: v for k, v in state.items() if k.startswith("column.")
              and not k.endswith("projections.input.weight") and v.is_floating_point()
              and not k.endswith(("threshold", "base", "inhibitory_input", "gain"))}
    assert any(k.endswith("log_scale") for k in column)
    assert 0 < sum(v.numel() for v in column.values()) < 100, {k: v.numel() for k, v in column.items()}


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_recurrent_column_trains(env, backend):
    col = ColumnSpec.recurrent(backend=backend, steps=4, readout_steps=2)
    cfg = tiny_cfg(env, f"recurrent-{backend}", column=col, noise_std=0.05, hebbian_rate=0.0,
                   homeostasis=False, epochs=2)
    m = _summary(cfg)
    assert m["summary"]["finished"]
    assert m["epochs"][-1]["train_loss"] < m["epochs"][0]["train_loss"] * 1.5


def test_exploding_recurrent_dynamics_stop_the_run(env):
    col = ColumnSpec.recurrent(init_radius=80.0, layer_norm=False)
    cfg = tiny_cfg(env, "explode", column=col, hebbian_rate=0.0, homeostasis=False, epochs=1)
    with pytest.raises(TrainingDiverged, match=r"Euler step \d+ of 10: population \S+ reached"):
        train(cfg)


def test_recurrent_preset_resolves():
    cfg = make_config({"preset": "recurrent", "seed": 3})
    assert cfg.column.dynamics == "recurrent" and cfg.column.weights == "counts"
    assert cfg.column.seed == 3 and not cfg.column.graded_inhibition
    free = make_config({"preset": "recurrent", "weights": "free"})
    assert free.column.weights == "free" and free.column.dynamics == "recurrent"
