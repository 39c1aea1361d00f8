"""The report of an experiment plan, rebuilt from its results folder alone.

A results folder (``results/<label>/``) holds the plan (``plan.json``) and one folder per finished
(row, seed) with its config and ``metrics.json`` (:mod:`pipelines.plan_results`). From those:

* :func:`write_report` -- ``report.md``, ``report.csv``, ``report.png``: per row mean ± s.d. of
  PublicTest accuracy (%) and macro F1 over seeds, the paired Δ accuracy against the reference row
  with its 95 % CI, the paired t-test and Holm's correction over the plan's comparisons
  (:mod:`pipelines.plan_stats`), and the paper's Δ where the plan gives one;
* :func:`power_table` -- the seed-to-seed s.d. of the paired differences and the seeds needed to
  detect a given Δ;
* :func:`rank_agreement` -- does a short recipe (``<plan>_screen``) rank the rows as the full
  recipe (``<plan>``) does: Spearman's ρ and Kendall's τ over the rows both ran, and whether each
  Δ has the same sign;
* :func:`update_doc` -- the tables of every plan pasted between two markers of a markdown file
  (``docs/results.md``), so that the document is rebuilt from ``results/`` by one command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .config import make_config
from .plan_results import (check_plain_name, comparable, config_diff, finished_summary, read_json,
                           stored_config)
from .plan_stats import detectable_delta, holm, paired_delta, pooled_sd, seeds_needed

#: The markers of the block :func:`update_doc` rewrites.
DOC_BEGIN = "<!-- plan-report:begin (python -m pipelines.experiments --report --doc ...) -->"
DOC_END = "<!-- plan-report:end -->"


def collect(folder: Path) -> tuple[dict, list[dict]]:
    """(plan, one record per finished run) of a results folder (or a runs folder): the
    ``plan.json`` there says the rows, seeds and overrides; a run whose ``config.json`` does not
    match the plan's resolved config for its (row, seed) is left out, with a warning."""
    folder = Path(folder)
    plan = read_plan(folder)
    extra = plan.get("set", {})
    records = []
    for row in plan["rows"]:
        over = {**plan.get("base", {}), **row.get("overrides", {}), **extra}
        for d in sorted((folder / row["name"]).glob("s*")):
            if not d.name[1:].isdigit():
                continue
            s = finished_summary(d)
            if s is None:
                continue
            seed = int(d.name[1:])
            expected = comparable(make_config({**over, "seed": seed, "out": str(d)}))
            got = stored_config(d)
            if got is not None and got != expected:
                print(f"{d}: config differs from the plan ({', '.join(config_diff(got, expected))}); "
                      "left out of the report", file=sys.stderr)
                continue
            records.append({
                "plan": plan["label"], "row": row["name"], "seed": seed,
                "acc": s.get("best_PublicTest_acc", s.get("best_val_acc")),
                "f1": s.get("best_PublicTest_f1", s.get("best_val_f1")),
                "private_acc": s.get("best_PrivateTest_acc"), "epochs": s.get("epochs_run"),
            })
    return plan, records


def read_plan(folder: Path) -> dict:
    """The ``plan.json`` of a results (or runs) folder, its label defaulting to the folder's
    name; a missing, corrupt or malformed file is an error naming it."""
    path = Path(folder) / "plan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no plan.json (not a plan's results folder)")
    plan = read_json(path, "a plan.json")
    if not isinstance(plan, dict) or not isinstance(plan.get("rows"), list) or not all(
            isinstance(r, dict) and "name" in r for r in plan["rows"]):
        raise ValueError(f"{path}: not a plan (needs \"rows\": a list of {{\"name\": ...}})")
    for row in plan["rows"]:
        check_plain_name(row["name"], f"{path}: row")
    plan.setdefault("label", Path(folder).name)
    return plan


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
    plot(rows, plan, dest / "report.png")
    return dest / "report.md"


def plot(rows: list[dict], plan: dict, path: Path) -> None:
    """Left: accuracy mean ± s.d. per row; right: Δ vs the reference with its 95 % CI, the
    paper's Δ as a cross."""
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(11, 1.5 + 0.38 * n), constrained_layout=True)
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
    ax_d.set_xlabel(f"Δ accuracy vs {plan['reference']} (pp), 95 % CI\n"
                    "× = paper's Δ; red = Holm p < 0.05")
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


def power_table(folder: Path, delta: float, alpha: float = 0.05, power: float = 0.8,
                seeds: tuple[int, ...] = (3, 5, 10)) -> str:
    """The seed-to-seed s.d. of paired differences (accuracy, pp) of each comparison in a plan's
    results, pooled; the seeds needed to detect ``delta``; and the smallest difference that
    ``seeds`` paired seeds detect, at the pooled s.d. (:mod:`pipelines.plan_stats`)."""
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
    lines.append("smallest |Δ| detected at the pooled s.d.: " + ", ".join(
        f"{n} seeds {detectable_delta(n, sd, alpha, power):.2f} pp" for n in seeds))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# does a short recipe rank the rows as the full one does?
# ------------------------------------------------------------------------------------------------
def rank_agreement(short: Path, full: Path) -> dict:
    """Compare the rows of two results folders of the same plan run with two recipes (``short``,
    e.g. ``results/controls_screen``; ``full``, e.g. ``results/controls``), over the rows both have.

    Returns ``{"short", "full", "rows": [...], "n", "spearman", "spearman_p", "kendall",
    "kendall_p", "same_sign", "compared"}``: per row the mean PublicTest accuracy (%) and its rank
    (1 = best) in each, and the paired Δ against the reference in each; ρ and τ of the two rankings
    (ρ's p exact by :func:`spearman_exact_p` up to 8 rows, τ's exact from scipy)
    (``None`` below 3 rows); ``same_sign`` counts the non-reference rows whose Δ has the same sign in
    both (``compared`` of them have a Δ in both)."""
    from scipy import stats

    plan_s, rows_s = _summary(short)
    plan_f, rows_f = _summary(full)
    if plan_s["reference"] != plan_f["reference"]:
        raise ValueError(f"{short} and {full}: different reference rows "
                         f"({plan_s['reference']!r}, {plan_f['reference']!r}); not the same plan")
    both = [r for r in rows_f if r in rows_s]
    if not both:
        raise ValueError(f"{short} and {full}: no row has finished runs in both")

    def ranks(rows: dict) -> dict[str, int]:
        order = sorted(both, key=lambda n: -rows[n]["acc_mean"])
        return {n: i + 1 for i, n in enumerate(order)}

    rk_s, rk_f = ranks(rows_s), ranks(rows_f)
    table, same, compared = [], 0, 0
    for n in both:
        ds, df = rows_s[n]["delta_acc"], rows_f[n]["delta_acc"]
        agree = None if ds is None or df is None else bool(np.sign(ds) == np.sign(df))
        if agree is not None:
            compared += 1
            same += agree
        table.append({"row": n, "short_acc": rows_s[n]["acc_mean"], "short_seeds": rows_s[n]["n_seeds"],
                      "short_rank": rk_s[n], "short_delta": ds, "full_acc": rows_f[n]["acc_mean"],
                      "full_seeds": rows_f[n]["n_seeds"], "full_rank": rk_f[n], "full_delta": df,
                      "same_sign": agree})
    out = {"short": plan_s["label"], "full": plan_f["label"], "rows": table, "n": len(both),
           "spearman": None, "spearman_p": None, "kendall": None, "kendall_p": None,
           "same_sign": same, "compared": compared}
    if len(both) >= 3:
        a, b = [rows_s[n]["acc_mean"] for n in both], [rows_f[n]["acc_mean"] for n in both]
        rho, p_rho = stats.spearmanr(a, b)
        if len(both) <= EXACT_SPEARMAN_MAX_ROWS:
            p_rho = spearman_exact_p(a, b)
        tau, p_tau = stats.kendalltau(a, b)
        out.update(spearman=float(rho), spearman_p=float(p_rho), kendall=float(tau), kendall_p=float(p_tau))
    return out


EXACT_SPEARMAN_MAX_ROWS = 8  # 8! = 40,320 pairings: enumerated at once


def spearman_exact_p(a: list[float], b: list[float]) -> float:
    """Two-sided p of Spearman's ρ between ``a`` and ``b`` (n values each), exact: ρ is Pearson's r
    of the ranks, and scipy's permutation test enumerates all n! pairings (0.2 s at n = 8).
    scipy's ``spearmanr`` uses a t approximation that gives p = 0 for ρ = ±1 at any n; exactly,
    4 rows ranked alike have p = 2/4! = 0.083."""
    from scipy import stats

    ranks = [stats.rankdata(np.asarray(x, float)) for x in (a, b)]
    return float(stats.pearsonr(*ranks, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue)


def _summary(folder: Path) -> tuple[dict, dict[str, dict]]:
    plan, records = collect(folder)
    return plan, {r["row"]: r for r in summarize(plan, records)}


def ranking_markdown(agr: dict) -> str:
    """The table of :func:`rank_agreement` and its one-line verdict, markdown."""
    lines = [f"| row | {agr['short']}: acc (%) [seeds] | rank | Δ (pp) | {agr['full']}: acc (%) [seeds] | "
             "rank | Δ (pp) | same sign |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in agr["rows"]:
        sign = "" if r["same_sign"] is None else ("yes" if r["same_sign"] else "**no**")
        lines.append(f"| {r['row']} | {r['short_acc']:.2f} [{r['short_seeds']}] | {r['short_rank']} | "
                     f"{_fmt(r['short_delta'], '+.2f', 'ref.')} | {r['full_acc']:.2f} [{r['full_seeds']}] | "
                     f"{r['full_rank']} | {_fmt(r['full_delta'], '+.2f', 'ref.')} | {sign} |")
    if agr["spearman"] is None:
        corr = f"{agr['n']} rows: too few for a rank correlation"
    else:
        corr = (f"Spearman ρ = {agr['spearman']:+.2f} (p {agr['spearman_p']:.2g}), Kendall τ = "
                f"{agr['kendall']:+.2f} (p {agr['kendall_p']:.2g}) over {agr['n']} rows")
    return ("\n".join(lines) + f"\n\nRanks by mean accuracy over each recipe's seeds (1 = best). {corr}; "
            f"Δ against the reference has the same sign in {agr['same_sign']} of {agr['compared']} rows.\n")


def recipe_pairs(folders: list[Path]) -> list[tuple[Path, Path]]:
    """(short, full) pairs among results folders: ``<plan>_<recipe>`` beside ``<plan>``, where the
    short folder's ``plan.json`` names that recipe."""
    by_name = {f.name: f for f in folders}
    pairs = []
    for f in folders:
        plan = read_plan(f)
        for recipe in plan.get("recipes", {}):
            base = f.name[: -len(recipe) - 1]
            if f.name.endswith(f"_{recipe}") and base in by_name:
                pairs.append((f, by_name[base]))
    return pairs


# ------------------------------------------------------------------------------------------------
# every plan, pasted into a document
# ------------------------------------------------------------------------------------------------
def plans_markdown(folders: list[Path], relative_to: Path) -> str:
    """Each plan's table and figure (paths relative to ``relative_to``, the document's folder), then
    the rank agreement of every (short, full) recipe pair; empty folders are listed as such."""
    import os

    parts = []
    for f in folders:
        plan, records = collect(f)
        rows = summarize(plan, records)
        parts.append(f"#### {plan['label']} (reference: {plan['reference']})\n")
        if not rows:
            parts.append("No finished runs yet.\n")
            continue
        parts.append(report_markdown(rows))
        png = f / "report.png"
        if png.is_file():
            parts.append(f"![{plan['label']}]({Path(os.path.relpath(png, relative_to)).as_posix()})\n")
    for short, full in recipe_pairs(folders):
        try:
            agr = rank_agreement(short, full)
        except ValueError as exc:
            parts.append(f"#### {short.name} against {full.name}\n\n{exc}\n")
            continue
        parts.append(f"#### Does {short.name} rank the rows as {full.name} does?\n")
        parts.append(ranking_markdown(agr))
    return "\n".join(parts)


def update_doc(doc: Path, folders: list[Path]) -> str:
    """Rewrite the block between :data:`DOC_BEGIN` and :data:`DOC_END` of the markdown file ``doc``
    with :func:`plans_markdown` of ``folders`` (atomically); returns the new block."""
    from connectomics.atomic_io import write_bytes_atomic

    doc = Path(doc)
    text = doc.read_text()
    if text.count(DOC_BEGIN) != 1 or text.count(DOC_END) != 1 or text.index(DOC_BEGIN) > text.index(DOC_END):
        raise ValueError(f"{doc}: needs one line {DOC_BEGIN!r} and, after it, one line {DOC_END!r} "
                         "around the block to rewrite")
    block = plans_markdown(folders, doc.resolve().parent)
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    write_bytes_atomic(doc, (head + DOC_BEGIN + "\n\n" + block.strip() + "\n\n" + DOC_END + tail).encode())
    return block
