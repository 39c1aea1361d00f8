"""Committed results of experiment plans: the small files of each finished run, kept in the
repository so that a plan started on one machine is finished on another.

    results/<plan>/plan.json                the plan as run (rows, reference, paper deltas, seeds, --set)
    results/<plan>/<row>/s<seed>/config.json  the run's resolved Config
    results/<plan>/<row>/s<seed>/metrics.json per-epoch metrics and the run summary
    results/<plan>/<row>/s<seed>/eval_<usage>.json  the best checkpoint's evaluation reports
                                               (eval_<usage>_final.json: the final checkpoint's)
    results/<plan>/<row>/s<seed>/predictions.npz  per-image predictions of the best and final
                                               checkpoints (:mod:`pipelines.predictions`, a few kB)
    results/<plan>/<row>/s<seed>/run.json     wall seconds of the run, host, finish time, git commit

Never checkpoints, graphs or figures (:data:`RESULT_FILES`; any file over :data:`MAX_BYTES` is
left out). A result is written into a temporary sibling folder and renamed into place, so a killed
copy never leaves a half-written result.

Whether a stored result answers a run of the plan is decided by its config
(:func:`comparable`): the resolved :class:`~pipelines.config.Config` of the run minus
:data:`IGNORED_FIELDS`, the fields that say where or how fast a run happens but not what it
computes. ``device``, ``amp``, ``compile`` and friends are compared as written (``auto`` in the
shipped plans), so a run on a GPU and one on a CPU of the same plan count as the same config; the
summary in ``metrics.json`` records the device that ran it. A change of *code* that changes
results (an initialisation, a model fix) is not a change of config: ``run.json`` records the
commit each result was made with; remove the plan's results folder (``git rm -r
results/<plan>``) to re-run it after such a change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from .config import Config
from .run_dir import RunDir

#: Config fields that do not change a run's result: where it writes (``out``), reads its data
#: (``data``: the path of the same FER-2013 release; ``cache_root``) or logs (``progress``,
#: ``log_every``, ``plots``), how many CPU threads it uses (``threads``: same maths, other
#: summation order), and the evaluation batch size (``eval_batch_size``: inference only).
IGNORED_FIELDS: tuple[str, ...] = ("out", "data", "cache_root", "progress", "log_every", "plots",
                                   "threads", "eval_batch_size")

#: Files of a run folder that are committed (``eval_*.json`` by pattern); a run without
#: predictions (trained before they were stored) is stored without them.
RESULT_FILES: tuple[str, ...] = (RunDir(".").config.name, RunDir(".").metrics_json.name,
                                 RunDir(".").predictions.name)
EVAL_PATTERN = RunDir(".").eval_json("*").name
RUN_INFO = "run.json"
#: Larger files are never committed.
MAX_BYTES = 100_000


#: A plan's label and its row names become folder names under ``results/`` and ``runs/``: plain
#: names only (letters, digits, ``_``, ``-``, ``.``; not starting with ``.``), never a path.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def check_plain_name(name: Any, what: str) -> None:
    """``ValueError`` naming ``what`` unless ``name`` is a :data:`PLAIN_NAME` (so that
    ``results/<label>/<row>`` stays inside ``results/``)."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r}: not a plain name (letters, digits, '_', '-', '.'; not "
                         "starting with '.'): it names a folder under the results and runs folders")


def read_json(path: Path, what: str = "a JSON file") -> Any:
    """The JSON at ``path``; a truncated or corrupt file is a ``ValueError`` naming it (never
    skipped: a report without one of its results would be a wrong report)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {what} that does not read as JSON (truncated or corrupt: {exc}); "
                         "restore it (git checkout) or remove it") from None


def comparable(cfg: Config | dict[str, Any]) -> dict[str, Any]:
    """The part of a config that determines a run's result (module doc), JSON types."""
    d = (cfg if isinstance(cfg, Config) else Config.from_dict(cfg)).to_dict()
    return {k: v for k, v in d.items() if k not in IGNORED_FIELDS}


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the fields where two :func:`comparable` dicts differ (nested included)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{k}.{s}" for s in config_diff(va, vb)]
        elif va != vb:
            out.append(k)
    return out


def stored_config(result: Path) -> dict[str, Any] | None:
    """The :func:`comparable` config of a stored result (or run folder), ``None`` when it has
    none or it does not load."""
    p = RunDir(result).config
    if not p.is_file():
        return None
    try:
        return comparable(Config.load(p))
    except (ValueError, TypeError, OSError):
        return None


def is_finished(folder: Path) -> bool:
    """``metrics.json`` says the run finished."""
    try:
        return bool(json.loads(RunDir(folder).metrics_json.read_text())["summary"].get("finished"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return False


def finished_metrics(folder: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` (``summary`` and ``epochs``) of a stored result (or run folder) that
    finished; ``None`` when it has none or the run has not finished. A ``metrics.json`` or
    ``config.json`` that does not read is a ``ValueError`` naming the file (what a report must
    not skip)."""
    rd = RunDir(folder)
    if rd.config.is_file():
        try:
            Config.load(rd.config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{exc}; restore it (git checkout) or remove {rd.root}") from None
    if not rd.metrics_json.is_file():
        return None
    metrics = read_json(rd.metrics_json, "a run's metrics.json")
    summary = metrics.get("summary") if isinstance(metrics, dict) else None
    if not isinstance(summary, dict):
        raise ValueError(f"{rd.metrics_json}: no run summary (not a metrics.json of pipelines.train)")
    return metrics if summary.get("finished") else None


def result_state(result: Path, expected: dict[str, Any]) -> str:
    """``match`` (finished, same config), ``changed`` (finished, another config) or ``absent``."""
    cfg = stored_config(result)
    if cfg is None or not is_finished(result):
        return "absent"
    return "match" if cfg == expected else "changed"


def store_result(run: Path, dest: Path, seconds: float | None = None) -> Path:
    """Copy the small files of the finished run folder ``run`` to ``dest`` (replacing an older
    result there), atomically: written into ``.<name>.tmp-<pid>`` beside it, then renamed."""
    run, dest = Path(run), Path(dest)
    if not is_finished(run):
        raise ValueError(f"{run}: not a finished run ({RunDir(run).metrics_json.name} has no finished summary)")
    files = [run / f for f in RESULT_FILES] + sorted(run.glob(EVAL_PATTERN))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in files:
        if f.is_file() and f.stat().st_size <= MAX_BYTES:
            shutil.copy2(f, tmp / f.name)
    if seconds is None:
        seconds = _train_seconds(run)
    info = {"seconds": seconds, "host": socket.gethostname(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_dir": str(run), "commit": code_commit()}
    (tmp / RUN_INFO).write_text(json.dumps(info, indent=1))
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def find_same_result(results_root: Path, expected: dict[str, Any], exclude: Path | None = None) -> Path | None:
    """A finished result anywhere under ``results_root`` (``<label>/<row>/s<seed>``) of exactly the
    :func:`comparable` config ``expected`` (seed included), other than ``exclude``; ``None`` if none.
    Two plans often share a configuration (the ablations' ``full`` row is the controls'
    ``connectome`` row): its run is trained once. Of several matches the most complete is taken
    (per-image predictions and the final-epoch evaluation stored: older runs lack them, and
    without them the report has no bootstrap for the row), then the first in path order."""
    exclude = None if exclude is None else Path(exclude).resolve()
    name = RunDir(".").config.name
    matches = [cfg.parent for cfg in sorted(Path(results_root).glob(f"*/*/s*/{name}"))
               if cfg.parent.name[1:].isdigit() and cfg.parent.resolve() != exclude
               and result_state(cfg.parent, expected) == "match"]
    if not matches:
        return None
    return max(matches, key=_completeness)   # max keeps the first of equals


def _completeness(result: Path) -> int:
    """How many of a result's optional files it has (predictions, final-epoch evaluation)."""
    return int((result / RunDir(".").predictions.name).is_file()) + \
        int(any(result.glob(RunDir(".").eval_json("*_final").name)))


def reuse_result(src: Path, dest: Path, results_root: Path) -> Path:
    """Copy the stored result ``src`` to ``dest`` (atomically, as :func:`store_result`), its
    ``run.json`` saying where it came from (``reused_from``, relative to ``results_root``)."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    info_path = tmp / RUN_INFO
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        info = {}
    info["reused_from"] = Path(os.path.relpath(src, results_root)).as_posix()
    info_path.write_text(json.dumps(info, indent=1))
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def code_commit() -> str | None:
    """The git commit of this checkout (with ``+dirty`` for uncommitted changes), ``None``
    outside git: recorded beside each result, since a change of code is not a change of config."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _train_seconds(run: Path) -> float | None:
    """Summed epoch seconds of a run's metrics (when the wall time was not measured)."""
    try:
        hist = json.loads(RunDir(run).metrics_json.read_text()).get("epochs", [])
        return float(sum(h.get("epoch_seconds", 0.0) for h in hist)) or None
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def run_seconds(result: Path) -> float | None:
    """Wall seconds of a stored result (``run.json``), else its summed epoch seconds."""
    try:
        s = json.loads((Path(result) / RUN_INFO).read_text()).get("seconds")
        if s:
            return float(s)
    except (OSError, json.JSONDecodeError):
        pass
    return _train_seconds(Path(result))


def local_run_state(run: Path, expected: dict[str, Any]) -> str:
    """State of a local run folder: ``done`` (finished, same config), ``partial`` (a
    ``last.pt`` of the same config to resume), ``stale`` (another config, or checkpoints
    without the ``config.json`` that says what they are: never reused) or ``new``."""
    rd = RunDir(run)
    if not rd.root.exists() or not any(rd.root.iterdir()):
        return "new"
    cfg = stored_config(rd.root)
    if (cfg is not None and cfg != expected) or (cfg is None and (rd.last.exists() or rd.final.exists())):
        return "stale"   # another config, or a checkpoint without the config that resumes it
    if rd.final.exists() and is_finished(rd.root):
        return "done"
    return "partial" if rd.last.exists() else "new"
