"""Experiment plans over the training pipeline: ablations and connectome controls, resumable
across machines through committed results.

    python -m pipelines.experiments --plan controls --seeds 5 --jobs 2               # run / finish
    python -m pipelines.experiments --plan ablations --recipe screen --seeds 3 --jobs 2
    python -m pipelines.experiments --report                    # every plan under results/
    python -m pipelines.experiments --power controls_screen --delta 0.5

A plan is a JSON file (``pipelines/plans/ablations.json``, ``controls.json``, or your own):
``{"base": {config overrides}, "reference": ROW, "rows": [{"name": ..., "overrides": {...},
"paper_delta": pp}], "recipes": {NAME: {overrides}}}``; each row is a list of
:class:`pipelines.config.Config` overrides, not code; ``paper_delta`` (optional) is the paper's
Δ accuracy for the row, shown beside ours. ``--recipe NAME`` adds that recipe's overrides to every
row (results under ``results/<plan>_<NAME>``), ``--set KEY=VALUE`` adds more (give a ``--name``
when they change the recipe, so that the results land in their own folder).

Each (row, seed) is one ``python -m pipelines.train`` run in ``OUT/<row>/s<seed>`` (default
``runs/<label>``); its small files (config, metrics, evaluation JSON: :mod:`pipelines.plan_results`)
are copied to ``results/<label>/<row>/s<seed>`` when it finishes, to be committed. A (row, seed)
whose committed result has the plan's config (minus the fields that do not change a result,
:data:`pipelines.plan_results.IGNORED_FIELDS`) is skipped; one whose config changed is re-run and
its result replaced, never reused. A local run of the same config resumes from its ``last.pt``;
one of another config is moved aside (``<dir>.stale-<time>``). Progress over the whole plan (runs
done / running / left, ETA from the finished runs' durations) is printed as each run ends.
``--jobs N`` runs N at a time, each with ``max(1, free cores // N)`` threads (measured once before
they start); on a GPU they run one after another. ``--scheduler ADDRESS`` sends the runs to the
workers of a Dask cluster instead (one run per worker).

``--report [DIR|LABEL ...]`` rebuilds from the results folders alone (default: every plan under
``--results``) ``report.md``, ``report.csv`` and ``report.png`` in each: per row mean ± s.d. of
PublicTest accuracy and macro F1, seeds, Δ against the reference row with its 95 % CI (paired over
seeds), the paired t-test with Holm's correction over the plan's comparisons, and the paper's Δ
(:mod:`pipelines.plan_stats`). ``--power`` prints the seed-to-seed s.d. of the paired differences
and the seeds needed to detect ``--delta`` points at alpha 0.05 with power 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import runtime
from .errors import run_cli
from .plan_results import (comparable, config_diff, is_finished, local_run_state, result_state,
                           run_seconds, stored_config, store_result)
from .plan_stats import holm, paired_delta, pooled_sd, seeds_needed
from .run_dir import RunDir

PLANS_DIR = Path(__file__).resolve().parent / "plans"
REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# plans
# ------------------------------------------------------------------------------------------------
def load_plan(name_or_path: str) -> dict:
    """A plan by name (``ablations``, ``controls``) or JSON path; each row's overrides are turned
    into a :class:`pipelines.config.Config` (:func:`pipelines.config.make_config`, the same path
    as the command line), so a bad field or value fails here, naming the row."""
    from .config import make_config

    path = Path(name_or_path)
    if not path.exists():
        path = PLANS_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(p.stem for p in PLANS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no plan {name_or_path!r} (a JSON file, or one of: {known})")
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    names = [r["name"] for r in plan.get("rows", [])]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: a plan needs rows with unique names")
    base = plan.get("base", {})
    for where, over in [("base", base)] + [(r["name"], {**base, **r.get("overrides", {})}) for r in plan["rows"]]:
        try:
            make_config(over)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {where!r}: {exc}") from None
    for rname, recipe in plan.get("recipes", {}).items():
        try:
            make_config({**base, **recipe})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: recipe {rname!r}: {exc}") from None
    for r in plan["rows"]:
        pd_ = r.get("paper_delta")
        if pd_ is not None and not isinstance(pd_, (int, float)):
            raise ValueError(f"{path}: row {r['name']!r}: paper_delta must be a number (pp), got {pd_!r}")
    if plan.get("reference", names[0]) not in names:
        raise ValueError(f"{path}: reference {plan['reference']!r} is not a row")
    plan.setdefault("reference", names[0])
    plan["path"] = str(path)
    return plan


def _cli_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@dataclass
class Run:
    """One (row, seed) of a plan: its training folder ``out`` and committed ``result`` folder."""

    row: str
    seed: int
    out: Path
    overrides: dict[str, Any]
    result: Path | None = None

    def config(self):
        """The resolved :class:`~pipelines.config.Config` this run trains with."""
        from .config import make_config

        return make_config({**self.overrides, "seed": self.seed, "out": str(self.out)})

    def expected(self) -> dict[str, Any]:
        """The :func:`pipelines.plan_results.comparable` config a matching result must have."""
        return comparable(self.config())

    def status(self) -> str:
        """``committed`` (a matching committed result) | ``done`` | ``partial`` | ``stale`` |
        ``new`` (:func:`pipelines.plan_results.local_run_state` of the run folder)."""
        exp = self.expected()
        if self.result is not None and result_state(self.result, exp) == "match":
            return "committed"
        return local_run_state(self.out, exp)

    def command(self, threads: int = 0, resume: bool = False) -> list[str]:
        cmd = [sys.executable, "-m", "pipelines.train"]
        if resume:
            cmd += ["--resume", str(self.out)]
        else:
            over = dict(self.overrides)
            preset = over.pop("preset", None)
            if preset:
                cmd += ["--preset", preset]
            for k, v in over.items():
                cmd += [f"--{k}", _cli_value(v)]
            cmd += ["--seed", str(self.seed), "--out", str(self.out)]
        if threads:
            cmd += ["--threads", str(threads)]
        return cmd + ["--progress", "false"]


def select_rows(plan: dict, rows: str | None) -> dict:
    """The plan with only the named rows (comma-separated) and its reference row to run; the
    results folder's ``plan.json`` keeps every row (``all_rows``), so its report shows them all."""
    if not rows:
        return plan
    want = {r.strip() for r in rows.split(",") if r.strip()}
    names = [r["name"] for r in plan["rows"]]
    unknown = sorted(want - set(names))
    if unknown:
        raise ValueError(f"{plan.get('path')}: no row(s) {unknown}; rows: {', '.join(names)}")
    want.add(plan["reference"])
    return {**plan, "rows": [r for r in plan["rows"] if r["name"] in want], "all_rows": plan["rows"]}


def plan_label(plan: dict, recipe: str | None = None) -> str:
    """The plan's folder name under ``results/``: its file's stem, ``_<recipe>`` appended."""
    stem = plan.get("label") or Path(plan.get("path", "plan")).stem
    return f"{stem}_{recipe}" if recipe else stem


def plan_overrides(plan: dict, recipe: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides every row gets on top of its own: the recipe's, then ``--set``'s."""
    if recipe and recipe not in plan.get("recipes", {}):
        raise ValueError(f"{plan.get('path')}: no recipe {recipe!r} (recipes: "
                         f"{', '.join(plan.get('recipes', {})) or 'none'})")
    return {**(plan.get("recipes", {}).get(recipe, {}) if recipe else {}), **(extra or {})}


def expand(plan: dict, seeds: list[int], out: Path, extra: dict[str, Any] | None = None,
           results: Path | None = None) -> list[Run]:
    """Every (row, seed) run of a plan: base, then row overrides, then ``extra`` (recipe and
    ``--set``); ``results``: the plan's folder of committed results."""
    runs = []
    for row in plan["rows"]:
        over = {**plan.get("base", {}), **row.get("overrides", {}), **(extra or {})}
        for s in seeds:
            runs.append(Run(row=row["name"], seed=s, out=out / row["name"] / f"s{s}", overrides=over,
                            result=None if results is None else results / row["name"] / f"s{s}"))
    return runs


def job_threads(jobs: int, on_gpu: bool = False) -> int:
    """Torch threads for each of ``jobs`` concurrent CPU runs: ``max(1, free cores // jobs)``
    (:func:`pipelines.runtime.default_threads`, measured once before the plan's own jobs start,
    so they do not count themselves busy); 0 (the run decides) on a GPU."""
    return 0 if on_gpu else runtime.default_threads(local_processes=max(1, jobs))


# ------------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@dataclass
class PlanProgress:
    """Runs done / running / left over a whole plan and the estimate to finish.

    ETA = mean duration of the finished runs x (left + running) / jobs: runs go ``jobs`` at a
    time, so that many finish per mean duration (a running run counts whole: the estimate errs
    late by at most one run). Durations come from committed results (``run.json``, possibly of
    another machine) and from the runs finished in this session."""

    total: int
    jobs: int = 1
    done: int = 0
    running: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.total - self.done - self.running

    def eta_seconds(self) -> float | None:
        if not self.durations:
            return None
        return sum(self.durations) / len(self.durations) * (self.left + self.running) / max(1, self.jobs)

    def line(self) -> str:
        eta = self.eta_seconds()
        bar_w = 20
        filled = int(bar_w * self.done / max(1, self.total))
        est = ("done" if self.done == self.total else "ETA unknown until a run finishes" if eta is None
               else f"ETA {_hms(eta)} (mean run {_hms(sum(self.durations) / len(self.durations))})")
        return (f"[{'#' * filled}{'.' * (bar_w - filled)}] {self.done}/{self.total} done, "
                f"{self.running} running, {self.left} left; {est}")


def _execute(cmd: list[str], log: str, cwd: str) -> int:
    """Run one training process, its output to ``log`` (a plain function: Dask workers call it)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                              env={**os.environ, "PYTHONPATH": cwd}).returncode


def _timed_execute(cmd: list[str], log: str, cwd: str) -> tuple[int, float]:
    t0 = time.time()
    return _execute(cmd, log, cwd), time.time() - t0


def _prepare(runs: list[Run], say) -> tuple[list[Run], list[tuple[Run, bool]]]:
    """(committed runs, [(run to launch, resume?)]): finished local runs of the same config are
    stored as results and count as committed; a run folder of another config is moved aside to
    ``<dir>.stale-<time>`` (never reused); a changed committed result is re-run."""
    committed, todo = [], []
    for r in runs:
        st = r.status()
        if st == "committed":
            committed.append(r)
            continue
        if r.result is not None and result_state(r.result, r.expected()) == "changed":
            diff = config_diff(stored_config(r.result) or {}, r.expected())
            say(f"{r.row}/s{r.seed}: committed result has another config ({', '.join(diff)}): re-running")
        if st == "done":
            if r.result is not None:
                store_result(r.out, r.result)
            committed.append(r)
        elif st == "stale":
            aside = r.out.with_name(f"{r.out.name}.stale-{time.strftime('%Y%m%dT%H%M%S')}")
            say(f"{r.out}: a run of another config; moved to {aside.name}")
            os.replace(r.out, aside)
            todo.append((r, False))
        else:
            todo.append((r, st == "partial"))
    return committed, todo


def run_plan(plan: dict, seeds: list[int], out: Path, *, jobs: int = 1, extra: dict | None = None,
             scheduler: str | None = None, progress: bool = True, results: Path | None = None,
             label: str | None = None) -> dict[str, str]:
    """Run (or resume, or skip) every run of ``plan``; store each finished run's result under
    ``results/<label>/``; returns {run dir: final status}."""
    say = print if progress else (lambda *a, **k: None)
    label = label or plan_label(plan)
    res_dir = None if results is None else Path(results) / label
    out.mkdir(parents=True, exist_ok=True)
    record = {**{k: v for k, v in plan.items() if k not in ("path", "all_rows")},
              "rows": plan.get("all_rows", plan["rows"]), "plan_file": plan.get("path"),
              "label": label, "seeds": seeds, "set": extra or {}}
    _write_json(out / "plan.json", record)
    runs = expand(plan, seeds, out, extra, res_dir)
    committed, todo = _prepare(runs, say)
    if res_dir is not None:
        _write_json(res_dir / "plan.json", record)
    on_gpu = _cuda_available()
    if on_gpu and jobs > 1 and not scheduler:
        say("one GPU: running one after another (--jobs ignored)")
        jobs = 1
    threads = job_threads(jobs, on_gpu)
    prog = PlanProgress(total=len(runs), jobs=max(1, jobs), done=len(committed),
                        durations=[d for r in committed if r.result is not None
                                   for d in [run_seconds(r.result)] if d])
    say(f"{plan.get('path', label)}: {len(runs)} runs, {len(committed)} with results already, "
        f"{len(todo)} to run ({jobs} at a time, {threads or 'auto'} threads each)")
    cmds = [(r, r.command(threads, resume), str(RunDir(r.out).log)) for r, resume in todo]
    codes: dict[str, int] = {}

    def finished(r: Run, code: int, seconds: float) -> None:
        codes[str(r.out)] = code
        prog.done += 1
        prog.running = min(max(1, jobs), len(cmds) - len(codes))
        if code == 0 and local_run_state(r.out, r.expected()) == "done":
            prog.durations.append(seconds)
            if r.result is not None:
                store_result(r.out, r.result, seconds)
        say(f"{r.row}/s{r.seed}: {'finished' if code == 0 else f'failed (exit {code})'} in "
            f"{_hms(seconds)}\n{prog.line()}", flush=True)

    prog.running = min(len(cmds), max(1, jobs))
    say(prog.line(), flush=True)
    _dispatch(cmds, jobs, scheduler, finished)
    status = {str(r.out): ("done" if r.status() in ("committed", "done") else r.status()) for r in runs}
    failed = [k for k, c in codes.items() if c != 0]
    if failed:
        print(f"{len(failed)} run(s) failed; see their train.log: {failed}", file=sys.stderr)
    return status


def _dispatch(cmds: list, jobs: int, scheduler: str | None, finished) -> None:
    """Execute ``cmds`` ``jobs`` at a time (or on a Dask cluster); ``finished(run, code, s)``
    after each, in completion order."""
    if scheduler:
        from distributed import Client, as_completed as dask_completed

        with Client(scheduler) as client:
            futs = {client.submit(_timed_execute, c, log, str(REPO_ROOT), pure=False): r
                    for r, c, log in cmds}
            for fut in dask_completed(futs):
                finished(futs[fut], *fut.result())
        return
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(_timed_execute, c, log, str(REPO_ROOT)): r for r, c, log in cmds}
        for fut in as_completed(futs):
            finished(futs[fut], *fut.result())


def _write_json(path: Path, obj: Any) -> None:
    from connectomics.atomic_io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def collect(folder: Path) -> tuple[dict, list[dict]]:
    """(plan, one record per finished run) of a results folder (or a runs folder): the
    ``plan.json`` there says the rows, seeds and overrides; a run whose ``config.json`` does not
    match the plan's resolved config for its (row, seed) is left out, with a warning."""
    folder = Path(folder)
    if not (folder / "plan.json").is_file():
        raise FileNotFoundError(f"{folder}: no plan.json (not a plan's results folder)")
    plan = json.loads((folder / "plan.json").read_text())
    plan.setdefault("label", folder.name)
    extra = plan.get("set", {})
    records = []
    for row in plan["rows"]:
        over = {**plan.get("base", {}), **row.get("overrides", {}), **extra}
        for d in sorted((folder / row["name"]).glob("s*")):
            if not d.name[1:].isdigit() or not is_finished(d):
                continue
            seed = int(d.name[1:])
            expected = Run(row["name"], seed, d, over).expected()
            got = stored_config(d)
            if got is not None and got != expected:
                print(f"{d}: config differs from the plan ({', '.join(config_diff(got, expected))}); "
                      "left out of the report", file=sys.stderr)
                continue
            s = json.loads(RunDir(d).metrics_json.read_text())["summary"]
            records.append({
                "plan": plan["label"], "row": row["name"], "seed": seed,
                "acc": s.get("best_PublicTest_acc", s.get("best_val_acc")),
                "f1": s.get("best_PublicTest_f1", s.get("best_val_f1")),
                "private_acc": s.get("best_PrivateTest_acc"), "epochs": s.get("epochs_run"),
            })
    return plan, records


def summarize(plan: dict, records: list[dict]) -> list[dict]:
    """Per row: seeds, mean/s.d. of PublicTest accuracy (%) and macro F1, the paired Δ accuracy
    against the reference row with its 95 % CI and p, Holm's p over the plan's comparisons, Δ F1,
    and the paper's Δ (the row's ``paper_delta`` in the plan)."""
    by_row: dict[str, dict[int, dict]] = {}
    for r in records:
        by_row.setdefault(r["row"], {})[r["seed"]] = r
    ref = by_row.get(plan["reference"], {})
    out = []
    for row in plan["rows"]:
        runs = by_row.get(row["name"], {})
        if not runs:
            continue
        acc = np.array([r["acc"] for r in runs.values()], float) * 100
        f1 = np.array([r["f1"] for r in runs.values()], float)
        shared = sorted(set(runs) & set(ref))
        is_ref = row["name"] == plan["reference"]
        d = paired_delta([runs[s]["acc"] * 100 for s in shared], [ref[s]["acc"] * 100 for s in shared]) \
            if shared and not is_ref else {"n": 0, "mean": None, "lo": None, "hi": None, "p": None, "sd": None}
        df1 = paired_delta([runs[s]["f1"] for s in shared], [ref[s]["f1"] for s in shared]) \
            if shared and not is_ref else {"mean": None}
        out.append({
            "plan": plan.get("label", Path(plan.get("path", "")).stem), "row": row["name"],
            "reference": is_ref, "n_seeds": len(runs),
            "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "f1_mean": float(f1.mean()), "f1_std": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
            "paired_seeds": d["n"], "delta_acc": d["mean"], "delta_lo": d["lo"], "delta_hi": d["hi"],
            "delta_sd": d["sd"], "paired_p": d["p"], "delta_f1": df1["mean"],
            "paper_delta": row.get("paper_delta"),
        })
    for r, p in zip(out, holm([r["paired_p"] for r in out])):
        r["holm_p"] = p
        r["significant"] = p is not None and p < 0.05
    return out


def _fmt(v, spec: str, none: str = "") -> str:
    return none if v is None else format(v, spec)


def report_markdown(rows: list[dict]) -> str:
    """The report table (one plan) and its legend, markdown."""
    lines = ["| row | seeds | PublicTest acc (%) | macro F1 | Δ acc vs reference (pp) [95 % CI] | "
             "p (paired t) | p (Holm) | Δ F1 | paper Δ (pp) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["reference"]:
            delta = "reference"
        elif r["delta_acc"] is None:
            delta = "no shared seeds"
        else:
            ci = "" if r["delta_lo"] is None else f" [{r['delta_lo']:+.2f}, {r['delta_hi']:+.2f}]"
            delta = f"{r['delta_acc']:+.2f}{ci}"
        lines.append(
            f"| {r['row']} | {r['n_seeds']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | "
            f"{r['f1_mean']:.4f} ± {r['f1_std']:.4f} | {delta} | {_fmt(r['paired_p'], '.2g')} | "
            f"{_fmt(r['holm_p'], '.2g')}{' *' if r['significant'] else ''} | "
            f"{_fmt(r['delta_f1'], '+.4f')} | {_fmt(r['paper_delta'], '+.2f', '–')} |")
    note = ("\nMean ± s.d. over seeds of the best-on-PublicTest checkpoint. Δ = mean paired difference "
            "to the reference row over the seeds both ran, with its 95 % confidence interval (paired "
            "t); p (Holm) corrects the paired t-test for the plan's number of comparisons; * = Holm "
            "p < 0.05. Paper Δ: the BioNIC paper's single-feature ablation (– where it gives none).\n")
    return "\n".join(lines) + "\n" + note


def write_report(folder: Path, dest: Path | None = None) -> Path:
    """``report.md``, ``report.csv`` and ``report.png`` of one plan's results folder (into
    ``dest``, default the folder itself)."""
    import pandas as pd

    plan, records = collect(folder)
    rows = summarize(plan, records)
    if not rows:
        raise ValueError(f"{folder}: no finished runs")
    dest = Path(dest or folder)
    dest.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(dest / "report.csv", index=False)
    title = f"## {plan['label']} (reference: {plan['reference']})\n\n"
    (dest / "report.md").write_text(title + report_markdown(rows))
    _plot(rows, plan, dest / "report.png")
    return dest / "report.md"


def _plot(rows: list[dict], plan: dict, path: Path) -> None:
    """Left: accuracy mean ± s.d. per row; right: Δ vs the reference with its 95 % CI, the
    paper's Δ as a cross."""
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(11, 1.2 + 0.38 * n), constrained_layout=True)
    ax_a, ax_d = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)[::-1]
    ax_a.errorbar([r["acc_mean"] for r in rows], y, xerr=[r["acc_std"] for r in rows], fmt="o",
                  color="#333", capsize=3)
    ax_a.set_yticks(y, [r["row"] for r in rows], fontsize=8)
    ax_a.set_xlabel("PublicTest accuracy (%), mean ± s.d. over seeds")
    for yi, r in zip(y, rows):
        if r["delta_acc"] is None:
            continue
        lo = r["delta_lo"] if r["delta_lo"] is not None else r["delta_acc"]
        hi = r["delta_hi"] if r["delta_hi"] is not None else r["delta_acc"]
        ax_d.errorbar([r["delta_acc"]], [yi], xerr=[[r["delta_acc"] - lo], [hi - r["delta_acc"]]],
                      fmt="o", capsize=3, color="#c0392b" if r["significant"] else "#4a7ab5")
        if r["paper_delta"] is not None:
            ax_d.plot([r["paper_delta"]], [yi], "x", color="k", ms=7)
    ax_d.axvline(0, color="#999", lw=1)
    ax_d.set_xlabel(f"Δ accuracy vs {plan['reference']} (pp), 95 % CI; x = paper; red = Holm p < 0.05")
    fig.suptitle(f"{plan['label']}: {n} rows")
    fig.savefig(path, dpi=120)


def plan_folders(targets: list[str], results: Path) -> list[Path]:
    """Results folders: each target a folder, or a plan label under ``results``; none: every
    folder of ``results`` holding a ``plan.json``."""
    if not targets:
        found = sorted(p.parent for p in Path(results).glob("*/plan.json"))
        if not found:
            raise FileNotFoundError(f"{results}: no plan results (no */plan.json)")
        return found
    out = []
    for t in targets:
        p = Path(t)
        if not p.is_dir():
            p = Path(results) / Path(t).stem
        if not (p / "plan.json").is_file():
            raise FileNotFoundError(f"{t}: no plan results there (looked for {p / 'plan.json'})")
        out.append(p)
    return out


def power_table(folder: Path, delta: float, alpha: float = 0.05, power: float = 0.8) -> str:
    """The seed-to-seed s.d. of paired differences (accuracy, pp) of each comparison in a plan's
    results, pooled, and the seeds needed to detect ``delta`` (:mod:`pipelines.plan_stats`)."""
    plan, records = collect(folder)
    rows = [r for r in summarize(plan, records) if r["delta_sd"] is not None and r["delta_sd"] > 0]
    if not rows:
        raise ValueError(f"{folder}: no comparison with 2 or more paired seeds yet")
    by = {(r["row"], r["seed"]): r["acc"] * 100 for r in records}
    diffs = [[by[(r["row"], s)] - by[(plan["reference"], s)] for s in sorted({k[1] for k in by})
              if (r["row"], s) in by and (plan["reference"], s) in by] for r in rows]
    lines = [f"{plan['label']}: paired differences to {plan['reference']} (PublicTest accuracy, pp); "
             f"seeds to detect |Δ| = {delta} pp, two-sided paired t, alpha {alpha}, power {power}",
             f"{'row':32s} {'pairs':>5s} {'mean Δ':>8s} {'s.d. Δ':>8s} {'seeds':>6s}"]
    for r in rows:
        lines.append(f"{r['row']:32s} {r['paired_seeds']:5d} {r['delta_acc']:+8.2f} {r['delta_sd']:8.2f} "
                     f"{seeds_needed(r['delta_sd'], delta, alpha, power):6d}")
    sd = pooled_sd(diffs)
    lines.append(f"{'pooled':32s} {sum(len(d) for d in diffs):5d} {'':8s} {sd:8.2f} "
                 f"{seeds_needed(sd, delta, alpha, power):6d}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", help="ablations | controls | a plan JSON file")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N (default 3)")
    ap.add_argument("--out", help="training folder of the runs (default runs/<label>)")
    ap.add_argument("--results", default="results", help="committed results root (default results/)")
    ap.add_argument("--recipe", default=None, help="a recipe of the plan (e.g. screen): its overrides "
                    "for every run, results under results/<plan>_<recipe>")
    ap.add_argument("--name", default=None, help="results folder name (default <plan>[_<recipe>])")
    ap.add_argument("--rows", default=None, help="comma-separated rows to run (default: all; the "
                    "reference is always kept)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time on the CPU")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address: send runs to its workers")
    ap.add_argument("--report", nargs="*", metavar="DIR", default=None,
                    help="write the report of these results folders (or plan labels; none: all)")
    ap.add_argument("--report-out", default=None, help="report folder (default: each results folder)")
    ap.add_argument("--power", metavar="DIR_OR_PLAN", default=None,
                    help="seeds needed to detect --delta, from a plan's results")
    ap.add_argument("--delta", type=float, default=0.5, help="difference for --power (pp, default 0.5)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ns = ap.parse_args(argv)
    if not (ns.plan or ns.report is not None or ns.power):
        ap.error("give --plan, --report or --power")
    return run_cli("experiments", lambda: _main(ns), debug=ns.debug)


def _main(ns: argparse.Namespace) -> int:
    results = Path(ns.results)
    if ns.power:
        print(power_table(plan_folders([ns.power], results)[0], ns.delta))
        return 0
    if ns.report is not None:
        for folder in plan_folders(ns.report, results):
            dest = Path(ns.report_out) / folder.name if ns.report_out else folder
            path = write_report(folder, dest)
            print(path.read_text())
            print(f"report: {path} (+ report.csv, report.png)")
        return 0
    plan = select_rows(load_plan(ns.plan), ns.rows)
    extra = plan_overrides(plan, ns.recipe, _parse_set(ns.set))
    label = ns.name or plan_label(plan, ns.recipe)
    out = Path(ns.out or f"runs/{label}")
    status = run_plan(plan, list(range(1, ns.seeds + 1)), out, jobs=ns.jobs, extra=extra,
                      scheduler=ns.scheduler, results=results, label=label)
    left = [k for k, v in status.items() if v != "done"]
    print(f"{len(status) - len(left)}/{len(status)} runs finished" + (f"; unfinished: {left}" if left else ""))
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
