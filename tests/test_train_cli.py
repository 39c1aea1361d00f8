"""The command-line tools as a user meets them: a corrupt FER cache is repaired, a run folder is
locked, every user error is one line naming the file or option, the default thread count and data
location, and the final evaluation's subset."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines import evaluate, experiments
from pipelines.fer2013 import load_fer2013, resolve_source
from pipelines.run_dir import RunDir, RunLockedError
from pipelines.runtime import default_threads
from pipelines.train import main, train
from tests.helpers import synthetic_csv, tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


def cli_args(cfg) -> list[str]:
    """The command line of a config (every option, flat names for the nested fields)."""
    from pipelines.config import cli_fields

    return sum(([f"--{k}", str(getattr(cfg, k))] for k in cli_fields()), [])


def one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in names:
        assert n in err, (n, err)
    return err


# -- a corrupt FER cache is decoded again and replaced -----------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_fer_cache_is_decoded_again_and_replaced(tmp_path, damage):
    data = synthetic_csv(tmp_path / "fer.csv", n_train=14, n_val=7, n_private=0)
    first = load_fer2013(data, tmp_path / "cache")
    cache = Path(first.cache_file)
    raw = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(raw[: len(raw) // 2])            # np.load: BadZipFile
    elif damage == "flip":
        b = bytearray(raw)
        for i in range(200, len(b) - 200, 997):           # bytes inside the compressed members
            b[i] ^= 0xFF
        cache.write_bytes(bytes(b))
    else:
        cache.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    again = load_fer2013(data, tmp_path / "cache")
    assert again.meta["from_cache"] is False
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    third = load_fer2013(data, tmp_path / "cache")         # the cache was replaced
    assert third.meta["from_cache"] is True and (third.images == first.images).all()


def test_train_refresh_redecodes(train_env, capsys):
    cfg = tiny_cfg(train_env, "refresh", model="cnn", graph="", epochs=1, cnn_hidden=8)
    assert main(cli_args(cfg) + ["--refresh"]) == 0
    assert "(decoded," in capsys.readouterr().out


# -- one training per run folder ---------------------------------------------------------
def test_second_training_into_the_same_folder_exits_at_once_naming_the_holder(train_env, capsys):
    cfg = tiny_cfg(train_env, "locked", model="cnn", graph="", epochs=1, cnn_hidden=8)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from pipelines.run_dir import RunDir\n"
        "with RunDir(sys.argv[2]).lock():\n"
        "    print('locked', flush=True); time.sleep(60)"), str(ROOT), cfg.out],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.perf_counter()
        assert main(cli_args(cfg)) == 2
        assert time.perf_counter() - t < 20
        one_error_line(capsys, cfg.out, f"pid {holder.pid}", "in use")
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} on host"):
            train(cfg)
        assert not RunDir(cfg.out).last.exists()
    finally:
        holder.kill()
        holder.wait()
    assert train(cfg)["finished"]     # the lock went with the process


# -- one line per user error, --debug shows the traceback --------------------------------
def test_user_errors_are_one_line_naming_the_file_or_option(train_env, tmp_path, capsys):
    root, data, graph_dir = train_env
    cfg = tiny_cfg(train_env, "errs", model="cnn", graph="", epochs=1, cnn_hidden=8)
    args = cli_args(cfg)

    def with_(**kw):
        out = list(args)
        for k, v in kw.items():
            out[out.index(f"--{k}") + 1] = str(v)
        return out

    assert main(with_(data="/nonexistent.csv")) == 2
    one_error_line(capsys, "/nonexistent.csv", "Kaggle")
    assert main(["--resume", str(tmp_path / "nope")]) == 2
    one_error_line(capsys, str(tmp_path / "nope"), "--resume")
    assert evaluate.main(["--run", str(tmp_path / "nope")]) == 2
    one_error_line(capsys, str(tmp_path / "nope"), "--run")
    assert main(with_(mask="bogus")) == 2
    one_error_line(capsys, "--mask", "bogus")
    # a truncated small .csv.gz (the header block decodes, the data block does not)
    raw = gzip.compress(Path(data).read_bytes())
    bad_gz = tmp_path / "cut.csv.gz"
    bad_gz.write_bytes(raw[: len(raw) - 1000])
    assert main(with_(data=bad_gz)) == 2
    one_error_line(capsys, str(bad_gz))
    # a truncated last.pt
    cut = tiny_cfg(train_env, "cutck", model="cnn", graph="", epochs=2, cnn_hidden=8, stop_after_epoch=1)
    assert train(cut)["stopped"]
    last = RunDir(cut.out).last
    last.write_bytes(last.read_bytes()[:300])
    capsys.readouterr()
    assert main(["--resume", cut.out]) == 2
    one_error_line(capsys, str(last), "checkpoint")
    with pytest.raises(Exception, match="last.pt"):
        main(["--resume", cut.out, "--debug"])
    # experiments: a plan that does not exist
    assert experiments.main(["--plan", str(tmp_path / "nope.json")]) == 2
    one_error_line(capsys, "nope.json")


# -- threads -----------------------------------------------------------------------------
def test_default_threads_leave_busy_cores_alone():
    assert default_threads(busy=0.0, cpus=2) == 2
    assert default_threads(busy=1.0, cpus=2) == 1            # one core busy: no waiting on it
    assert default_threads(busy=1.7, cpus=2) == 1            # never 0
    assert default_threads(busy=0.2, cpus=8) == 8
    assert default_threads(2, busy=0.0, cpus=8) == 4         # shared by two local processes
    assert default_threads(busy=3.0, cpus=8) == 5
    assert default_threads() >= 1


# -- the default data location ----------------------------------------------------------
def test_default_data_is_data_cache_and_missing_data_says_where_to_get_it(tmp_path, monkeypatch):
    from pipelines.config import Config

    assert Config().data == "data_cache/fer2013/fer2013.csv"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Kaggle .*Facial Expression Recognition Challenge.*"
                                                r"data_cache/fer2013/fer2013.csv"):
        resolve_source(Config().data)
    folder = tmp_path / "data_cache" / "fer2013"
    folder.mkdir(parents=True)
    (folder / "fer2013.csv.gz").write_bytes(gzip.compress(b"emotion,pixels,Usage\n"))
    assert resolve_source(Config().data) == Path("data_cache/fer2013/fer2013.csv.gz")
    (folder / "fer2013.csv.gz").unlink()
    (folder / "train" / "happy").mkdir(parents=True)
    assert resolve_source(Config().data) == Path("data_cache/fer2013")
    (folder / "fer2013.csv").write_text("x")
    assert resolve_source(Config().data) == Path("data_cache/fer2013/fer2013.csv")


# -- the final evaluation uses --limit_val; the banner says amp off ------------------------
def test_final_evaluation_honours_limit_val_and_banner_names_amp(train_env, capsys):
    cfg = tiny_cfg(train_env, "limval", model="cnn", graph="", epochs=1, cnn_hidden=8, limit_val=10)
    s = train(cfg)
    out = capsys.readouterr().out
    assert "amp off" in out and "amp None" not in out and s["amp"] == "off"
    rep = json.loads(RunDir(cfg.out).eval_json("PublicTest").read_text())
    assert rep["n"] == 10
    m = json.loads(RunDir(cfg.out).metrics_json.read_text())
    assert s["best_PublicTest_acc"] == pytest.approx(m["epochs"][0]["val_acc"])
    assert np.isfinite(rep["loss"])


def test_a_failed_start_leaves_no_empty_run_folder(tmp_path, capsys):
    """A training that fails before writing anything removes the folder it created (and its
    lock); a folder that existed before is left alone."""
    out = tmp_path / "runs" / "never"
    assert main(["--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not out.exists()
    kept = tmp_path / "runs" / "mine"
    kept.mkdir(parents=True)
    assert main(["--data", str(tmp_path / "missing.csv"), "--out", str(kept)]) == 2
    assert kept.is_dir()


# -- one spelling of the cache option ---------------------------------------------------------
def test_every_cli_spells_the_cache_option_cache_root(tmp_path, capsys):
    import argparse

    from pipelines import build_graph, export
    from pipelines.config import add_config_arguments

    ap = argparse.ArgumentParser()
    add_config_arguments(ap)
    assert ap.parse_args(["--cache_root", "c"]).cache_root == "c"                         # train
    assert evaluate.main(["--run", str(tmp_path / "nope"), "--cache_root", "c"]) == 2          # parsed
    assert "--run" in capsys.readouterr().err
    for argv in (["--cache_root", "c"], ["--cache", "c"]):                                 # old spelling kept
        assert build_graph.parse_args(["--source", "surrogate", *argv]).cache_root == "c"
        assert export.parse_args(["sonata", "--out", "x", *argv]).cache_root == "c"
