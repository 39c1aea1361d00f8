"""Training, config and checkpoints: one device/precision rule, a scoped dynamo
fallback, the LR schedule object, checkpoints that carry the resolved column spec and the graph's
checksum (ones without them load too), the run-folder layout, and short functions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from pipelines import evaluate
from pipelines import train as train_mod
from pipelines.config import Config, make_config
from pipelines.run_dir import RunDir
from pipelines.runtime import dynamo_fallback, resolve_runtime
from pipelines.checkpoint import CheckpointError, load_run
from pipelines.optim import LRSchedule
from pipelines.train import TrainState, main, train
from tests.helpers import load_checkpoint as load
from tests.helpers import small_graph, states_equal, tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


# -- one device & precision rule --------------------------------------------------------------------
def test_runtime_rule():
    cpu = resolve_runtime("cpu", amp="auto", threads=1)
    assert cpu.amp_dtype is None and cpu.amp == "off" and cpu.deterministic and not cpu.compile
    assert resolve_runtime("cpu", amp="bf16", threads=1).amp_dtype is torch.bfloat16
    assert resolve_runtime("cpu", amp="off", threads=3).threads == 3
    with pytest.raises(ValueError, match="--amp"):
        resolve_runtime("cpu", amp="fp8")


def test_amp_bf16_on_cpu_trains_and_evaluates_in_the_same_precision(train_env, monkeypatch, tmp_path):
    seen: list = []
    real = evaluate.evaluate_arrays

    def spy(model, images, labels, batch_size=1024, amp_dtype=None, channels_last=False, tta_flip=False):
        seen.append(amp_dtype)
        return real(model, images, labels, batch_size, amp_dtype, channels_last, tta_flip)
    monkeypatch.setattr(train_mod, "evaluate_arrays", spy)
    monkeypatch.setattr(evaluate, "evaluate_arrays", spy)
    autocast_dtypes: list = []
    real_autocast = torch.autocast

    def spy_autocast(device_type, dtype=None, enabled=True, **kw):
        if enabled:
            autocast_dtypes.append(dtype)
        return real_autocast(device_type, dtype=dtype, enabled=enabled, **kw)
    monkeypatch.setattr(torch, "autocast", spy_autocast)
    cfg = tiny_cfg(train_env, "bf16", model="cnn", graph="", epochs=1, cnn_hidden=8, amp="bf16", device="cpu")
    s = train(cfg)
    assert s["amp"] == "bf16" and torch.bfloat16 in autocast_dtypes
    assert evaluate.main(["--run", cfg.out, "--usage", "PrivateTest", "--out", str(tmp_path / "ev"),
                          "--device", "cpu"]) == 0
    assert len(seen) >= 3 and all(d is torch.bfloat16 for d in seen), seen   # epoch, final, evaluate
    assert json.loads((tmp_path / "ev" / "eval_PrivateTest.json").read_text())["amp"] == "bf16"


# -- torch._dynamo.config.suppress_errors is scoped -------------------------------------------------
def test_dynamo_fallback_is_scoped_to_the_run(train_env, monkeypatch):
    import torch._dynamo as dynamo

    before = dynamo.config.suppress_errors
    with dynamo_fallback():
        assert dynamo.config.suppress_errors is True
    assert dynamo.config.suppress_errors == before
    monkeypatch.setattr(torch, "compile", lambda m, **kw: m)      # no compiler in a unit test
    inside = []
    cfg = tiny_cfg(train_env, "compiled", model="cnn", graph="", epochs=1, cnn_hidden=8, compile="on")
    train(cfg, hooks={"after_step": lambda step, m: inside.append(dynamo.config.suppress_errors)})
    assert inside and all(inside)
    assert dynamo.config.suppress_errors == before


# -- one LR schedule object, plateau included --------------------------------------------------------
def test_lr_schedule_plateau_rule_and_state():
    cfg = Config(lr=1e-2, lr_schedule="plateau", plateau_patience=1, plateau_factor=0.5,
                 min_lr_ratio=0.2, warmup_epochs=0)
    s = LRSchedule(cfg, total_steps=100, warmup_steps=0)
    higher = lambda a, b: a > b  # noqa: E731
    lrs = []
    for metric in (0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6):
        s.end_epoch(metric, higher)
        lrs.append(s.lr(10))
    assert lrs == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3, 2e-3])   # floor min_lr_ratio
    t = LRSchedule(cfg, 100, 0)
    t.load_state_dict(s.state_dict())
    assert t.lr(3) == s.lr(3) and t.plateau_best == 0.6
    cos = LRSchedule(Config(lr_schedule="cosine"), 100, 10)
    cos.end_epoch(0.1, higher)
    cos.end_epoch(0.0, higher)     # other schedules ignore the plateau rule
    assert cos.scale == 1.0


# -- checkpoints carry the resolved spec and the graph checksum ---------------------------------------
def test_checkpoints_carry_spec_and_checksum_and_loading_uses_them(train_env, monkeypatch):
    cfg = tiny_cfg(train_env, "spec", epochs=1)
    train(cfg)
    run = RunDir(cfg.out)
    for name in ("last", "best", "final"):
        ck = load(run.checkpoint(name))
        assert ck["column_spec"]["inhibition_strength"] == cfg.inhibition_strength
        assert ck["column_spec"]["layers"][0]["name"] == "A"
        assert ck["graph_checksum"] == small_graph().checksum()
    before, _, _ = load_run(cfg.out, "best")
    # a later change of the preset defaults does not change how the saved run loads
    real_spec = Config.column_spec
    monkeypatch.setattr(Config, "column_spec", lambda self: real_spec(self).replace(inhibition_strength=0.9))
    model, _, _ = load_run(cfg.out, "best")
    assert model.spec.inhibition_strength == cfg.inhibition_strength
    assert states_equal(model.state_dict(), before.state_dict()) == []
    # a changed graph in the run folder is refused, naming it
    other = small_graph(seed=5)
    other.save(run.graph)
    with pytest.raises(CheckpointError, match="graph checksum"):
        train(cfg, resume=True)


def test_a_checkpoint_in_the_old_format_still_resumes_bit_exactly(train_env):
    ref = tiny_cfg(train_env, "oldref", epochs=2)
    train(ref)
    cut = tiny_cfg(train_env, "oldcut", epochs=2, stop_after_epoch=1)
    train(cut)
    last = RunDir(cut.out).last
    ck = load(last)
    # a checkpoint without spec, checksum, schedule or threads, its plateau fields in state
    for k in ("column_spec", "graph_checksum", "schedule", "threads"):
        ck.pop(k)
    ck["state"].update(plateau_best=None, plateau_bad=0, lr_scale=1.0)
    torch.save(ck, last)
    assert main(["--resume", cut.out]) == 0
    assert states_equal(load(Path(ref.out) / "final.pt")["model"], load(Path(cut.out) / "final.pt")["model"]) == []
    model, _, _ = load_run(cut.out, "final")
    assert model.spec.inhibition_strength == ref.inhibition_strength


def test_train_state_reads_old_state_dicts():
    old = {"epoch": 2, "step": 12, "best_metric": 0.4, "best_epoch": 1, "bad_epochs": 1,
           "plateau_best": 0.4, "plateau_bad": 1, "lr_scale": 0.5, "history": [{"epoch": 1}],
           "finished": False}
    st = TrainState.from_dict(old)
    assert st.epoch == 2 and st.step == 12 and st.history == [{"epoch": 1}]
    s = LRSchedule(Config(lr_schedule="plateau"), 10, 0)
    s.load_state_dict(old)
    assert s.scale == 0.5 and s.plateau_bad == 1


# -- one module owns the run folder layout ------------------------------------------------------------
def test_run_folder_layout_is_named_in_one_module():
    run = RunDir("r")
    assert run.config == Path("r/config.json") and run.last == Path("r/last.pt")
    assert run.checkpoint("best") == Path("r/best.pt") and run.checkpoint("x/y.pt") == Path("x/y.pt")
    assert run.eval_json("PrivateTest") == Path("r/eval_PrivateTest.json")
    assert run.confusion_png("PublicTest") == Path("r/confusion_PublicTest.png")
    for mod in ("train", "evaluate", "experiments"):
        src = (ROOT / "pipelines" / f"{mod}.py").read_text()
        for name in ('"last.pt"', '"best.pt"', '"final.pt"', '"config.json"', '"metrics.json"'):
            assert name not in src, (mod, name)


def test_no_function_in_the_packages_is_over_100_lines():
    long = []
    for f in sorted(p for pkg in ("connectomics", "graphnet", "pipelines") for p in (ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 100:
                    long.append(f"{f.name}:{node.name} ({n} lines)")
    assert long == []


# -- Config nests the column spec and the augmentation ----------------------------------------------
def test_config_nests_column_spec_and_augmentation_and_flat_options_map_to_them():
    import argparse
    from dataclasses import fields, replace

    from graphnet import ColumnSpec

    from pipelines.augment import AugmentConfig
    from pipelines.config import FLAT, add_config_arguments, config_from_args

    names = {f.name for f in fields(Config)}
    assert isinstance(Config().column, ColumnSpec) and isinstance(Config().aug, AugmentConfig)
    assert not names & set(FLAT)                      # no field re-declared under a new name
    nested = {f.name for f in fields(ColumnSpec)} | {f.name for f in fields(AugmentConfig)}
    assert names & nested == {"seed"}                 # the run's seed; the column's is column.seed
    ap = argparse.ArgumentParser()
    add_config_arguments(ap)
    cfg, explicit = config_from_args(ap.parse_args([
        "--preset", "paper", "--hebbian_rate", "0", "--column_backend", "sparse", "--aug_rotate", "3",
        "--mask", "random", "--aug_erase", "0.5", "--column_seed", "7", "--lr", "0.01"]))
    assert (cfg.column.hebbian_rate, cfg.column.backend, cfg.column.mask, cfg.column.seed) == (0.0, "sparse", "random", 7)
    assert cfg.aug.rotate_deg == 3.0 and cfg.aug.erase_p == 0.5 and cfg.lr == 0.01
    assert cfg.column.homeostasis is True and cfg.aug.flip == 0.5 and cfg.column.noise_std == 0.05   # preset kept
    assert cfg.hebbian_rate == 0.0 and cfg.aug_rotate == 3.0               # flat reads
    assert replace(cfg, dale=False).column.dale is False                   # flat replace
    # one seed varies the whole run: the column's seed follows --seed unless --column_seed is given
    s3, _ = config_from_args(ap.parse_args(["--preset", "paper", "--seed", "3"]))
    assert (s3.seed, s3.column.seed) == (3, 3)
    assert config_from_args(ap.parse_args(["--seed", "3", "--column_seed", "0"]))[0].column.seed == 0
    assert make_config({"seed": 4, "column": s3.column.to_dict()}).column.seed == 3       # explicit spec kept
    saved = make_config({"seed": 5, "column_seed": 0})
    assert make_config({}, base=saved).column.seed == 0                                  # a saved config kept
    # one validation: the spec's own, named by option
    with pytest.raises(ValueError, match=r"--inhibition_strength 2\.0: inhibition_strength must be in \[0, 1\]"):
        config_from_args(ap.parse_args(["--inhibition_strength", "2"]))


def test_a_flat_config_json_of_an_earlier_run_loads(tmp_path):
    old = Config().to_dict()
    flat = {k: v for k, v in old.items() if k not in ("column", "aug")}
    flat.update(intra_layer=True, dale=False, graded_inhibition=True, inhibition_strength=0.3,
                layer_norm=True, noise_std=0.1, hebbian_rate=1e-4, homeostasis=True,
                homeostatic_target=0.1, homeostatic_rate=0.01, mask="dense", column_backend="dense",
                column_seed=2, aug_flip=0.5, aug_rotate=10.0, aug_scale=0.1, aug_translate=0.1,
                aug_brightness=0.2, aug_contrast=0.2, aug_erase=0.25)
    (tmp_path / "config.json").write_text(json.dumps(flat))
    cfg = Config.load(tmp_path / "config.json")
    assert (cfg.column.dale, cfg.column.inhibition_strength, cfg.column.mask, cfg.column.seed) == (False, 0.3, "dense", 2)
    assert cfg.aug == Config().aug
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_plans_are_checked_by_the_config_itself(tmp_path):
    from pipelines import experiments as ex

    p = tmp_path / "p.json"
    p.write_text(json.dumps({"rows": [{"name": "ok", "overrides": {"mask": "random"}},
                                      {"name": "bad", "overrides": {"mask": "bogus"}}]}))
    with pytest.raises(ValueError, match=r"row 'bad': --mask 'bogus'.*choose one of"):
        ex.load_plan(str(p))
    p.write_text(json.dumps({"base": {"preset": "nope"}, "rows": [{"name": "a", "overrides": {}}]}))
    with pytest.raises(ValueError, match=r"row 'base': unknown preset 'nope'"):
        ex.load_plan(str(p))
