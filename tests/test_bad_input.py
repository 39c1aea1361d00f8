"""Bad input to the pipelines' command-line tools: never a silently wrong answer, never a path
outside the run, and every user error one line naming the file, row, option or field (exit 2;
Ctrl-C exit 130)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from pipelines import checkpoint as checkpoint_module
from pipelines import evaluate, experiments, export
from pipelines import train as train_module
from pipelines.run_dir import RunDir
from pipelines.train import main as train_main
from pipelines.train import train
from graphnet.testing import synthetic_graph
from tests.helpers import SMALL, load_checkpoint, small_graph, tiny_cfg


def one_error_line(capsys, *names: str) -> str:
    """The one line a tool printed on stderr (no traceback), containing each of ``names``."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for name in names:
        assert name in err, (name, err)
    return err


def cli_args(cfg) -> list[str]:
    from pipelines.config import cli_fields

    return sum(([f"--{k}", str(getattr(cfg, k))] for k in cli_fields()), [])


# -- evaluate checks the graph checksum at every load --------------------------------------------
def test_evaluate_refuses_a_checkpoint_of_another_graph(train_env, tmp_path, capsys):
    run_a = tiny_cfg(train_env, "graph_a", epochs=1)
    train(run_a)
    bigger = tmp_path / "bigger_graph"
    synthetic_graph({**SMALL, ("4P", "L4"): 16}, p=0.25).save(bigger)
    run_b = tiny_cfg(train_env, "graph_b", epochs=1, graph=str(bigger))
    train(run_b)
    capsys.readouterr()
    ev = tmp_path / "ev"
    b_best = str(RunDir(run_b.out).best)
    # B's checkpoint evaluated as run A: another graph (other shapes), refused before any shape error
    assert evaluate.main(["--run", run_a.out, "--checkpoint", b_best, "--usage", "PrivateTest",
                          "--out", str(ev), "--device", "cpu"]) == 2
    one_error_line(capsys, b_best, "graph checksum", str(RunDir(run_a.out).graph))
    # run A's graph folder replaced by another wiring of the same shapes: refused, not evaluated
    small_graph(seed=5).save(RunDir(run_a.out).graph)
    assert evaluate.main(["--run", run_a.out, "--usage", "PrivateTest", "--out", str(ev),
                          "--device", "cpu"]) == 2
    one_error_line(capsys, "best.pt", "graph checksum")
    assert not (ev / "eval_PrivateTest.json").exists()


# -- every numeric option's range, in one place ----------------------------------------------------
@pytest.mark.parametrize("option, value, says", [
    ("--limit_train", "-5", "--limit_train -5: must be >= 0"),
    ("--limit_val", "-1", "--limit_val -1: must be >= 0"),
    ("--feat_size", "0", "--feat_size 0: must be >= 1"),
    ("--epochs", "0", "--epochs 0: must be >= 1"),
    ("--lr", "nan", "--lr nan: must be > 0"),
    ("--dropout", "1.5", "--dropout 1.5: must be in [0, 1)"),
    ("--aug_flip", "2", "--aug_flip 2.0: must be in [0, 1]"),
    ("--seed", "-1", "--seed -1: must be >= 0"),
    ("--wide_channels", "abc", "--wide_channels 'abc'"),
])
def test_an_option_out_of_range_is_one_line_naming_it(option, value, says, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--data", str(tmp_path / "fer.csv"), "--out", str(out), option, value]) == 2
    one_error_line(capsys, says)
    assert not out.exists()


def test_experiment_options_are_checked_before_anything_is_written(tmp_path, capsys):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"rows": [{"name": "a", "overrides": {}}]}))
    common = ["--plan", str(plan), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    assert experiments.main([*common, "--seeds", "0"]) == 2
    one_error_line(capsys, "--seeds 0: must be >= 1")
    assert experiments.main([*common, "--jobs", "0"]) == 2
    one_error_line(capsys, "--jobs 0")
    assert experiments.main([*common, "--set", "epochs=abc"]) == 2
    one_error_line(capsys, "--set epochs=abc", "--epochs 'abc': expected an integer")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()
    plan.write_text(json.dumps({"rows": [{"name": "a", "overrides": {"epochs": "abc"}}]}))
    assert experiments.main(common) == 2
    one_error_line(capsys, str(plan), "row 'a'", "--epochs 'abc'")
    assert evaluate.main(["--run", str(tmp_path), "--batch_size", "0"]) == 2
    one_error_line(capsys, "--batch_size 0")


# -- plan rows and --name are plain names ----------------------------------------------------------
def test_plan_and_row_names_must_be_plain_names(tmp_path, capsys):
    plan = tmp_path / "p.json"
    common = ["--plan", str(plan), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    plan.write_text(json.dumps({"rows": [{"name": "../../x", "overrides": {}}]}))
    assert experiments.main(common) == 2
    one_error_line(capsys, str(plan), "'../../x'", "not a plain name")
    plan.write_text(json.dumps({"rows": [{"name": "a", "overrides": {}}]}))
    assert experiments.main([*common, "--name", "../../x"]) == 2
    one_error_line(capsys, "--name '../../x'", "not a plain name")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()
    assert not (tmp_path.parent / "x").exists()
    # a committed plan.json naming a row outside its folder is not read from there either
    folder = tmp_path / "results" / "evil"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"rows": [{"name": "../other", "overrides": {}}]}))
    assert experiments.main(["--report", str(folder)]) == 2
    one_error_line(capsys, "plan.json", "'../other'")


# -- a report never drops a result it cannot read --------------------------------------------------
def _committed_plan(root: Path, seeds: int = 2) -> Path:
    """A results folder of a one-row plan with ``seeds`` finished results."""
    folder = root / "results" / "tiny"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"rows": [{"name": "a", "overrides": {}}],
                                                  "reference": "a", "label": "tiny"}))
    for seed in range(1, seeds + 1):
        d = folder / "a" / f"s{seed}"
        d.mkdir(parents=True)
        experiments.Run("a", seed, d, {}).config().save(d / "config.json")
        (d / "metrics.json").write_text(json.dumps({"summary": {
            "finished": True, "best_PublicTest_acc": 0.5 + seed / 100, "best_PublicTest_f1": 0.4}}))
    return folder


@pytest.mark.parametrize("damaged, says", [("metrics.json", "truncated or corrupt"),
                                           ("config.json", "not a valid config.json")])
def test_a_truncated_result_is_an_error_naming_it_not_a_seed_left_out(tmp_path, capsys, damaged, says):
    folder = _committed_plan(tmp_path)
    doc = tmp_path / "results.md"
    doc.write_text("# results\n<!-- plan-report:begin (python -m pipelines.experiments --report "
                   "--doc ...) -->\nold\n<!-- plan-report:end -->\n")
    assert experiments.main(["--report", str(folder)]) == 0
    assert "| a | 2 |" in (folder / "report.md").read_text()
    capsys.readouterr()
    bad = folder / "a" / "s2" / damaged
    bad.write_bytes(bad.read_bytes()[:25])
    before = doc.read_text()
    assert experiments.main(["--report", str(folder), "--doc", str(doc)]) == 2
    one_error_line(capsys, str(bad), says)
    assert doc.read_text() == before
    (folder / "plan.json").write_text('{"rows": [')
    assert experiments.main(["--report", str(folder)]) == 2
    one_error_line(capsys, str(folder / "plan.json"))


# -- concurrent plans: a failed run is reported, never counted as finished ------------------------
def test_a_run_that_failed_here_is_reported_even_if_another_plan_finished_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiments, "_cuda_available", lambda: False)
    monkeypatch.setattr(experiments.runtime, "default_threads", lambda local_processes=1: 1)

    def locked_out(cmd, log, cwd):
        """The run's folder was being trained by another plan, which finished it; this one exited 2."""
        out = Path(cmd[cmd.index("--out") + 1])
        run = experiments.Run(out.parent.name, int(cmd[cmd.index("--seed") + 1]), out, {})
        out.mkdir(parents=True, exist_ok=True)
        run.config().save(out / "config.json")
        (out / "final.pt").write_bytes(b"x")
        (out / "metrics.json").write_text(json.dumps({"summary": {"finished": True}, "epochs": []}))
        return 2
    monkeypatch.setattr(experiments, "_execute", locked_out)
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"rows": [{"name": "a", "overrides": {}}]}))
    code = experiments.main(["--plan", str(plan), "--seeds", "2", "--out", str(tmp_path / "runs"),
                             "--results", str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert code != 0
    assert "2/2 runs finished" not in out and "failed" in out.splitlines()[-1]


# -- the user errors of train: one line, exit 2 ------------------------------------------------------
def test_connectomics_errors_are_user_errors_in_train(train_env, tmp_path, monkeypatch, capsys):
    from connectomics.sources.column import SnapshotIntegrityError

    broken = tmp_path / "graph"
    small_graph().save(broken)
    (broken / "nodes.parquet").write_bytes(b"not parquet")
    cfg = tiny_cfg(train_env, "bad_graph", epochs=1, graph=str(broken))
    assert train_main(cli_args(cfg)) == 2                                   # CacheError
    one_error_line(capsys, str(broken / "nodes.parquet"))

    def tampered(*args, **kwargs):
        raise SnapshotIntegrityError("connectomics/data/v1_column/nodes.parquet: sha256 does not match")
    import connectomics.build

    monkeypatch.setattr(connectomics.build, "build_default_graph", tampered)
    cfg = tiny_cfg(train_env, "tampered", epochs=1, graph="")
    assert train_main(cli_args(cfg)) == 2                                   # SourceError
    one_error_line(capsys, "sha256 does not match")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def test_device_cuda_without_cuda_is_one_line(train_env, capsys):
    cfg = tiny_cfg(train_env, "cuda", model="cnn", graph="", epochs=1, cnn_hidden=8, device="cuda")
    assert train_main(cli_args(cfg)) == 2
    one_error_line(capsys, "--device cuda", "CUDA is not available")
    from pipelines.runtime import resolve_device

    with pytest.raises(ValueError, match=r"--device 'gpu': choose auto, cpu, cuda"):
        resolve_device("gpu")


class _DiskFull:
    """A file on a disk with 4 kB free: the write that goes past them fails with ENOSPC."""

    def __init__(self, f, free: int = 4096) -> None:
        self.f, self.free = f, free

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.free:
            self.f.write(data[:self.free])
            self.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_last_one(train_env, monkeypatch, capsys):
    cfg = tiny_cfg(train_env, "full_disk", model="cnn", graph="", epochs=2, cnn_hidden=8, stop_after_epoch=1)
    assert train(cfg)["stopped"]
    run = RunDir(cfg.out)
    before = load_checkpoint(run.last)
    real_open = open
    monkeypatch.setattr(checkpoint_module, "open",
                        lambda path, mode="r", *a, **k: _DiskFull(real_open(path, mode, *a, **k))
                        if "w" in mode else real_open(path, mode, *a, **k), raising=False)
    capsys.readouterr()
    assert train_main(["--resume", cfg.out]) == 2
    one_error_line(capsys, str(run.root), ".pt", "no space left on device")
    assert load_checkpoint(run.last)["state"] == before["state"]
    assert not [p.name for p in run.root.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_in_train_is_one_line_exit_130_and_the_run_resumes(train_env, monkeypatch, capsys):
    cfg = tiny_cfg(train_env, "ctrl_c", model="cnn", graph="", epochs=2, cnn_hidden=8)
    real_step = train_module.train_step

    def interrupted_at_step_8(training, x, y):
        if training.state.step == 8:
            raise KeyboardInterrupt
        return real_step(training, x, y)
    monkeypatch.setattr(train_module, "train_step", interrupted_at_step_8)
    try:
        code = train_main(cli_args(cfg))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the command line with a traceback")
    assert code == 130
    one_error_line(capsys, "interrupted", "--resume", cfg.out)
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert train_main(["--resume", cfg.out]) == 0


# -- checkpoints that are not ours --------------------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        return (os.getpid, ())


def test_a_malicious_checkpoint_is_refused_as_unsafe(train_env, tmp_path, capsys):
    cfg = tiny_cfg(train_env, "victim", model="cnn", graph="", epochs=1, cnn_hidden=8)
    train(cfg)
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _RunsCode()}, evil)
    capsys.readouterr()
    assert evaluate.main(["--run", cfg.out, "--checkpoint", str(evil), "--device", "cpu"]) == 2
    err = one_error_line(capsys, str(evil), "refused as unsafe", "getpid")
    assert "weights_only" not in err and "truncated" not in err


# -- export: atomic output folder, --force, exit 2 --------------------------------------------------
def test_export_sonata_leaves_nothing_behind_and_asks_before_replacing(tmp_path, monkeypatch, capsys):
    graph = tmp_path / "graph"
    small_graph().save(graph)
    out = tmp_path / "circuit"
    assert export.main(["sonata", "--out", str(out), "--graph", str(graph), "--population", "."]) == 2
    one_error_line(capsys, "--population '.'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph"]
    # a failure half-way through the files: no folder, no temporary sibling
    import connectomics.export as cx

    real = cx.to_sonata

    def fails_after_the_nodes(g, folder, **kw):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "nodes.h5").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cx, "to_sonata", fails_after_the_nodes)
    assert export.main(["sonata", "--out", str(out), "--graph", str(graph)]) == 2
    one_error_line(capsys, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph"]
    monkeypatch.setattr(cx, "to_sonata", real)
    # a folder with files is replaced only with --force
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export.main(["sonata", "--out", str(out), "--graph", str(graph)]) == 2
    one_error_line(capsys, str(out), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert export.main(["sonata", "--out", str(out), "--graph", str(graph), "--force"]) == 0
    assert "circuit_config.json" in {p.name for p in out.iterdir()} and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["circuit", "graph"]
    capsys.readouterr()
    state = tmp_path / "state.json"
    state.write_text("{}")
    assert export.main(["neuroglancer", "--graph", str(graph), "--types", "4P", "--json", str(state)]) == 2
    one_error_line(capsys, str(state), "--force")


def test_every_numeric_option_has_a_range():
    from pipelines.config import RANGES, cli_fields

    numeric = {name for name, kind in cli_fields().items() if kind in ("int", "float")}
    assert numeric == set(RANGES), sorted(numeric ^ set(RANGES))
