"""Experiment plans over the training pipeline: ablations and connectome controls, resumable.

    python -m pipelines.experiments --plan ablations --seeds 3 --out runs/ablations
    python -m pipelines.experiments --plan controls  --seeds 3 --out runs/controls --jobs 2
    python -m pipelines.experiments --plan my_plan.json --set epochs=30 --out runs/mine
    python -m pipelines.experiments --report runs/ablations runs/controls     # table + plot

A plan is a JSON file (``pipelines/plans/ablations.json``, ``controls.json``, or your own):
``{"base": {config overrides}, "reference": ROW, "rows": [{"name": ..., "overrides": {...}}]}``;
each row is a list of :class:`pipelines.config.Config` overrides, not code. ``--set KEY=VALUE``
adds overrides to every row (e.g. a shorter ``epochs`` for a quick pass).

Each (row, seed) is one ``python -m pipelines.train`` run in ``OUT/<row>/s<seed>``: a finished run
(``final.pt`` and a finished ``metrics.json``) is skipped, a half-finished one (``last.pt``)
resumes from its checkpoint, the rest start. ``--jobs N`` runs N at a time as processes on the
CPU, each with ``free cores // N`` threads (:func:`pipelines.runtime.default_threads`); on a GPU they run one after another. ``--scheduler ADDRESS``
sends the runs to the workers of a Dask cluster instead (one run per worker).

``--report DIR...`` reads every plan folder and writes ``report.md``, ``report.csv`` and
``report.png`` (into the first DIR, or ``--report-out``): per row the mean ± s.d. over seeds of
PublicTest accuracy and macro F1, the number of seeds, Δ accuracy against the plan's reference
row, and a paired t-test over the seeds both rows share (same seeds for every row) saying
whether Δ is distinguishable from seed noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import run_cli
from .run_dir import RunDir
from .runtime import default_threads

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
    row: str
    seed: int
    out: Path
    overrides: dict[str, Any]

    def status(self) -> str:
        """``done`` | ``partial`` | ``new``."""
        run = RunDir(self.out)
        m = run.metrics_json
        if run.final.exists() and m.exists():
            try:
                if json.loads(m.read_text())["summary"].get("finished"):
                    return "done"
            except (json.JSONDecodeError, KeyError):
                pass
        return "partial" if run.last.exists() else "new"

    def command(self, threads: int = 0) -> list[str]:
        cmd = [sys.executable, "-m", "pipelines.train"]
        if self.status() == "partial":
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


def expand(plan: dict, seeds: list[int], out: Path, extra: dict[str, Any] | None = None) -> list[Run]:
    """Every (row, seed) run of a plan: base, then row overrides, then ``extra`` (``--set``)."""
    runs = []
    for row in plan["rows"]:
        over = {**plan.get("base", {}), **row.get("overrides", {}), **(extra or {})}
        for s in seeds:
            runs.append(Run(row=row["name"], seed=s, out=out / row["name"] / f"s{s}", overrides=over))
    return runs


def _execute(cmd: list[str], log: str, cwd: str) -> int:
    """Run one training process, its output to ``log`` (a plain function: Dask workers call it)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                              env={**os.environ, "PYTHONPATH": cwd}).returncode


def run_plan(plan: dict, seeds: list[int], out: Path, *, jobs: int = 1, extra: dict | None = None,
             scheduler: str | None = None, progress: bool = True) -> dict[str, str]:
    """Run (or resume, or skip) every run of ``plan``; returns {run dir: final status}."""
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps({**plan, "seeds": seeds, "set": extra or {}}, indent=2))
    runs = expand(plan, seeds, out, extra)
    todo = [r for r in runs if r.status() != "done"]
    skipped = len(runs) - len(todo)
    if progress:
        print(f"{plan['path']}: {len(runs)} runs, {skipped} finished already, {len(todo)} to run")
    on_gpu = _cuda_available()
    if on_gpu and jobs > 1 and not scheduler:
        print("one GPU: running one after another (--jobs ignored)")
        jobs = 1
    threads = 0 if on_gpu else default_threads(local_processes=max(1, jobs))
    cmds = [(r, r.command(threads), str(RunDir(r.out).log)) for r in todo]
    bar = tqdm(total=len(cmds), desc="runs", unit="run", disable=not progress)
    codes: dict[str, int] = {}
    if scheduler:
        from distributed import Client, as_completed

        with Client(scheduler) as client:
            futs = {client.submit(_execute, c, log, str(REPO_ROOT), pure=False): r for r, c, log in cmds}
            for fut in as_completed(futs):
                codes[str(futs[fut].out)] = fut.result()
                bar.update()
    else:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futs = {pool.submit(_execute, c, log, str(REPO_ROOT)): r for r, c, log in cmds}
            for fut, r in futs.items():
                codes[str(r.out)] = fut.result()
                bar.update()
    bar.close()
    status = {str(r.out): r.status() for r in runs}
    failed = [k for k, c in codes.items() if c != 0]
    if failed:
        print(f"{len(failed)} run(s) failed; see their train.log: {failed}", file=sys.stderr)
    return status


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
    """(plan, one record per finished run) of a plan folder."""
    plan = json.loads((folder / "plan.json").read_text())
    records = []
    for row in plan["rows"]:
        for m in sorted((folder / row["name"]).glob("s*/metrics.json")):
            s = json.loads(m.read_text())["summary"]
            if not s.get("finished"):
                continue
            records.append({
                "plan": Path(folder).name, "row": row["name"], "seed": int(s["seed"]),
                "acc": s.get("best_PublicTest_acc", s.get("best_val_acc")),
                "f1": s.get("best_PublicTest_f1", s.get("best_val_f1")),
                "private_acc": s.get("best_PrivateTest_acc"), "epochs": s.get("epochs_run"),
            })
    return plan, records


def summarize(plan: dict, records: list[dict]) -> list[dict]:
    """Per row: n, mean/s.d. accuracy and F1, Δ vs the reference row, paired t-test over seeds."""
    import numpy as np
    from scipy import stats

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
        delta = p = None
        if row["name"] != plan["reference"] and shared:
            a = np.array([runs[s]["acc"] for s in shared]) * 100
            b = np.array([ref[s]["acc"] for s in shared]) * 100
            delta = float((a - b).mean())
            if len(shared) >= 2 and np.ptp(a - b) > 0:
                p = float(stats.ttest_rel(a, b).pvalue)
        out.append({
            "plan": Path(plan.get("path", "")).stem, "row": row["name"], "n_seeds": len(runs),
            "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "f1_mean": float(f1.mean()), "f1_std": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
            "delta_acc": delta, "paired_p": p, "paired_seeds": len(shared),
            "distinguishable": (p is not None and p < 0.05),
        })
    return out


def write_report(folders: list[Path], dest: Path) -> Path:
    """report.md, report.csv and report.png for the plan folders (see module docstring)."""
    import pandas as pd

    rows = []
    for folder in folders:
        plan, records = collect(folder)
        rows += summarize(plan, records)
    if not rows:
        raise ValueError(f"no finished runs under {', '.join(map(str, folders))}")
    df = pd.DataFrame(rows)
    dest.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest / "report.csv", index=False)
    lines = ["| plan | row | seeds | PublicTest accuracy (%) | macro F1 | Δ acc vs reference (pp) | paired t-test p |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        d = "reference" if r["delta_acc"] is None and r["paired_seeds"] else (
            "" if r["delta_acc"] is None else f"{r['delta_acc']:+.2f}")
        p = "" if r["paired_p"] is None else f"{r['paired_p']:.2g}" + (" *" if r["distinguishable"] else "")
        lines.append(f"| {r['plan']} | {r['row']} | {r['n_seeds']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | "
                     f"{r['f1_mean']:.4f} ± {r['f1_std']:.4f} | {d} | {p} |")
    note = ("\nMean ± s.d. over seeds of the best-on-PublicTest checkpoint. Δ = mean paired difference "
            "to the plan's reference row over the seeds both ran; * = paired t-test p < 0.05 "
            "(with 3 seeds only large, consistent effects can reach it).\n")
    (dest / "report.md").write_text("\n".join(lines) + "\n" + note)
    _bar_plot(df, dest / "report.png")
    return dest / "report.md"


def _bar_plot(df, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6, 0.45 * len(df) + 2), 4.5), constrained_layout=True)
    ax = fig.add_subplot()
    labels = [f"{p}:{r}" if df["plan"].nunique() > 1 else r for p, r in zip(df["plan"], df["row"])]
    ax.bar(range(len(df)), df["acc_mean"], yerr=df["acc_std"], capsize=3,
           color=["#888" if d is None or d != d else "#4a7ab5" for d in df["delta_acc"]])
    ax.set_xticks(range(len(df)), labels, rotation=60, ha="right", fontsize=8)
    lo = max(0.0, float((df["acc_mean"] - df["acc_std"]).min()) - 5)
    ax.set_ylim(lo, float((df["acc_mean"] + df["acc_std"]).max()) + 2)
    ax.set_ylabel("PublicTest accuracy (%), mean ± s.d. over seeds")
    ax.set_title("experiments (grey: reference rows)")
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", help="ablations | controls | a plan JSON file")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N (default 3)")
    ap.add_argument("--out", help="plan folder (default runs/<plan>)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time on the CPU")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address: send runs to its workers")
    ap.add_argument("--report", nargs="+", metavar="DIR", help="write the report of these plan folders")
    ap.add_argument("--report-out", default=None, help="report folder (default: the first DIR)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ns = ap.parse_args(argv)
    if not (ns.plan or ns.report):
        ap.error("give --plan or --report")
    return run_cli("experiments", lambda: _main(ns), debug=ns.debug)


def _main(ns: argparse.Namespace) -> int:
    if ns.report:
        folders = [Path(d) for d in ns.report]
        path = write_report(folders, Path(ns.report_out) if ns.report_out else folders[0])
        print(path.read_text())
        print(f"report: {path}")
        return 0
    plan = load_plan(ns.plan)
    out = Path(ns.out or f"runs/{Path(ns.plan).stem}")
    status = run_plan(plan, list(range(1, ns.seeds + 1)), out, jobs=ns.jobs, extra=_parse_set(ns.set),
                      scheduler=ns.scheduler)
    left = [k for k, v in status.items() if v != "done"]
    print(f"{len(status) - len(left)}/{len(status)} runs finished" + (f"; unfinished: {left}" if left else ""))
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
