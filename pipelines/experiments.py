"""Experiment plans over the training pipeline: ablations and connectome controls, resumable
across machines through committed results.

    python -m pipelines.experiments --plan controls --seeds 5 --jobs 2               # run / finish
    python -m pipelines.experiments --plan ablations --recipe screen --seeds 3 --jobs 2
    python -m pipelines.experiments --report                    # every plan under results/
    python -m pipelines.experiments --power controls_screen --delta 0.5

A plan is a JSON file (``pipelines/plans/ablations.json``, ``controls.json``, or your own):
``{"base": {config overrides}, "reference": ROW, "rows": [{"name": ..., "overrides": {...},
"paper_delta": pp}], "recipes": {NAME: {overrides}}, "family": [ROW, ...]}``; each row is a list of
:class:`pipelines.config.Config` overrides, not code; ``paper_delta`` (optional) is the paper's
Δ accuracy for the row, shown beside ours; ``family`` (optional) names, before the plan runs, the
rows compared with the reference: Holm's correction covers exactly those (default: every other
row), and a results folder that holds results refuses a plan with another family
(:func:`results_record`). ``superseded_by`` / ``superseded_note`` mark a plan's results as
replaced by another plan (kept in the record, and kept when the plan runs again;
:mod:`pipelines.plan_report`). ``--recipe NAME`` adds that recipe's overrides to every
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
A run whose config and seed match a committed result of another plan (the ablations' ``full``
row is the controls' ``connectome`` row) is not trained again: that result is copied, its
``run.json`` naming the source (``--no-reuse`` trains it anyway). ``--jobs N`` runs N at a time,
each with ``max(1, free cores // N)`` threads (measured once before they start); on a GPU they run
one after another. ``--scheduler ADDRESS`` sends the runs to the
workers of a Dask cluster instead (one run per worker).

``--report [DIR|LABEL ...]`` rebuilds from the results folders alone (default: every plan under
``--results``) ``report.md``, ``report.csv`` and ``report.png`` in each: per row mean ± s.d. of
PublicTest accuracy (best and final epoch) and macro F1, seeds, Δ against the reference row for
both epochs with its 95 % CI (paired over seeds), the paired t-test with Holm's correction within
the plan's comparison family, where the runs stored per-image predictions a bootstrap interval
over seeds and test images and McNemar's test per seed, the smallest Δ the plan's seeds detect,
and the paper's Δ (:mod:`pipelines.plan_report`); with ``--doc docs/results.md`` it also rewrites that file's block
between the plan-report markers with every plan's table and figure and, for each ``<plan>_<recipe>``
beside ``<plan>``, whether the short recipe ranks the rows as the full one does. ``--compare SHORT
FULL`` prints that comparison alone; ``--delta-figure PNG`` draws the reported plans' Δ side by side
(:func:`pipelines.plan_report.delta_figure`; ``--delta-plans`` picks the plans it draws, so that
panels of a few points are not drawn on the axis of a 17-point ablation). ``--power`` prints the
seed-to-seed s.d. of the paired differences and the seeds needed to detect ``--delta`` points at
alpha 0.05 with power 0.8.
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

from . import runtime
from .config import check_option
from .errors import run_cli
from .plan_report import (check_plan_fields, delta_figure, plan_folders, power_table, rank_agreement,
                          ranking_markdown, update_doc, write_report)
from .plan_results import (check_plain_name, comparable, config_diff, find_same_result, local_run_state,
                           read_json, result_state, reuse_result, run_seconds, stored_config, store_result)
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
    plan = read_json(path, "a plan")
    rows = plan.get("rows") if isinstance(plan, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
        raise ValueError(f"{path}: a plan needs \"rows\": a list of {{\"name\": ..., \"overrides\": {{...}}}}")
    names = [r["name"] for r in rows]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: a plan needs rows with unique names")
    for name in names:
        check_plain_name(name, f"{path}: row")
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
    check_plan_fields(plan, path)
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


def _prepare(runs: list[Run], say, reuse: bool = True) -> tuple[list[Run], list[tuple[Run, bool]]]:
    """(committed runs, [(run to launch, resume?)]): finished local runs of the same config are
    stored as results and count as committed; so is, with ``reuse``, a committed result of another
    plan with the same config and seed (copied, its ``run.json`` naming the source); a run folder of
    another config is moved aside to ``<dir>.stale-<time>`` (never reused); a changed committed
    result is re-run."""
    committed, todo = [], []
    for r in runs:
        st = r.status()
        if st == "committed":
            committed.append(r)
            continue
        if reuse and st == "new" and r.result is not None:
            root = r.result.parent.parent.parent
            src = find_same_result(root, r.expected(), exclude=r.result)
            if src is not None:
                reuse_result(src, r.result, root)
                say(f"{r.row}/s{r.seed}: same config and seed as {src.relative_to(root)}: result reused")
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
             label: str | None = None, reuse: bool = True) -> dict[str, str]:
    """Run (or resume, or skip) every run of ``plan``; store each finished run's result under
    ``results/<label>/`` (``reuse``: copying a committed result of the same config and seed from
    another plan instead of training it again); returns {run dir: final status}: ``done``, or
    ``failed`` for a run whose training exited non-zero in this call, or its folder's state."""
    say = print if progress else (lambda *a, **k: None)
    label = label or plan_label(plan)
    res_dir = None if results is None else Path(results) / label
    out.mkdir(parents=True, exist_ok=True)
    record = {**{k: v for k, v in plan.items() if k not in ("path", "all_rows")},
              "rows": plan.get("all_rows", plan["rows"]), "plan_file": plan.get("path"),
              "label": label, "seeds": seeds, "set": extra or {}}
    if res_dir is not None:
        record = results_record(res_dir, record)
    _write_json(out / "plan.json", record)
    runs = expand(plan, seeds, out, extra, res_dir)
    committed, todo = _prepare(runs, say, reuse)
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
    # a run that failed here is reported as failed even if another process finished its folder
    return {**status, **{k: "failed" for k in failed}}


#: Fields of a results folder's ``plan.json`` that mark finished results, kept when the plan runs again.
SUPERSESSION_FIELDS = ("superseded_by", "superseded_note")


def results_record(res_dir: Path, record: dict) -> dict:
    """The ``plan.json`` to write into the results folder ``res_dir`` for a run of the plan
    ``record``: ``record`` itself, keeping a supersession mark already on the folder (unless the
    plan sets its own). A plan whose comparison ``family`` differs from the one the folder's
    finished results ran under is refused: a family is fixed before the runs, never re-picked."""
    path = Path(res_dir) / "plan.json"
    if not path.is_file():
        return record
    old = read_json(path, "a plan.json")
    if old.get("family") != record.get("family") and any(Path(res_dir).glob("*/s*/metrics.json")):
        raise ValueError(f"{path}: its results ran with comparison family {old.get('family')}, the plan "
                         f"names {record.get('family')}; a family is fixed before a plan runs: keep it, "
                         "or put the results in another folder (--name)")
    if "superseded_by" in record:
        return record
    return {**record, **{k: old[k] for k in SUPERSESSION_FIELDS if k in old}}


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
    ap.add_argument("--no-reuse", action="store_true", help="train a run even when another plan's "
                    "committed result has its config and seed (default: copy that result)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address: send runs to its workers")
    ap.add_argument("--report", nargs="*", metavar="DIR", default=None,
                    help="write the report of these results folders (or plan labels; none: all)")
    ap.add_argument("--report-out", default=None, help="report folder (default: each results folder)")
    ap.add_argument("--doc", default=None, metavar="MARKDOWN", help="with --report: also rewrite the "
                    "block between the plan-report markers of this file (e.g. docs/results.md)")
    ap.add_argument("--delta-figure", default=None, metavar="PNG", help="with --report: also draw the "
                    "reported plans side by side in one figure of each compared row's Δ, its intervals "
                    "and the smallest detectable Δ")
    ap.add_argument("--delta-plans", nargs="+", default=None, metavar="DIR",
                    help="with --delta-figure: draw only these plans (default: every reported plan)")
    ap.add_argument("--compare", nargs=2, metavar=("SHORT", "FULL"), default=None,
                    help="does recipe SHORT (e.g. controls_screen) rank the rows as FULL (controls) does")
    ap.add_argument("--power", metavar="DIR_OR_PLAN", default=None,
                    help="seeds needed to detect --delta, from a plan's results")
    ap.add_argument("--delta", type=float, default=0.5, help="difference for --power (pp, default 0.5)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ns = ap.parse_args(argv)
    if not (ns.plan or ns.report is not None or ns.power or ns.compare):
        ap.error("give --plan, --report, --power or --compare")
    if (ns.doc or ns.delta_figure) and ns.report is None:
        ap.error("--doc and --delta-figure go with --report")
    if ns.delta_plans and not ns.delta_figure:
        ap.error("--delta-plans goes with --delta-figure")
    return run_cli("experiments", lambda: _main(ns), debug=ns.debug)


def _main(ns: argparse.Namespace) -> int:
    results = Path(ns.results)
    if ns.power:
        check_option("--delta", ns.delta, "> 0")
        print(power_table(plan_folders([ns.power], results)[0], ns.delta))
        return 0
    if ns.report is not None:
        for folder in plan_folders(ns.report, results):
            dest = Path(ns.report_out) / folder.name if ns.report_out else folder
            path = write_report(folder, dest)
            print(path.read_text())
            print(f"report: {path} (+ report.csv, report.png)")
        if ns.doc:
            update_doc(Path(ns.doc), plan_folders(ns.report, results))
            print(f"{ns.doc}: plan-report block rewritten")
        if ns.delta_figure:
            drawn = plan_folders(ns.delta_plans or ns.report, results)
            print(f"Δ figure: {delta_figure(drawn, ns.delta_figure, results)}")
        return 0
    if ns.compare:
        short, full = plan_folders(ns.compare, results)
        print(ranking_markdown(rank_agreement(short, full)))
        return 0
    check_option("--seeds", ns.seeds, ">= 1")
    check_option("--jobs", ns.jobs, ">= 1")
    plan = select_rows(load_plan(ns.plan), ns.rows)
    extra = plan_overrides(plan, ns.recipe, _parse_set(ns.set))
    _check_set(plan, extra, ns.set)
    label = ns.name or plan_label(plan, ns.recipe)
    check_plain_name(label, "--name" if ns.name else f"{plan['path']}: plan label")
    out = Path(ns.out or f"runs/{label}")
    status = run_plan(plan, list(range(1, ns.seeds + 1)), out, jobs=ns.jobs, extra=extra,
                      scheduler=ns.scheduler, results=results, label=label, reuse=not ns.no_reuse)
    done = sum(v == "done" for v in status.values())
    failed = [k for k, v in status.items() if v == "failed"]
    left = [k for k, v in status.items() if v not in ("done", "failed")]
    print(f"{done}/{len(status)} runs finished" + (f"; failed: {failed}" if failed else "")
          + (f"; unfinished: {left}" if left else ""))
    return 0 if not (failed or left) else 1


def _check_set(plan: dict, extra: dict[str, Any], given: list[str]) -> None:
    """The ``--set`` overrides (with the recipe's) make a valid config of the plan's base."""
    from .config import make_config

    try:
        make_config({**plan.get("base", {}), **extra})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--set {' '.join(given)}: {exc}" if given else str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
