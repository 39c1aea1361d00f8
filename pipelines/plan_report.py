"""The report of an experiment plan, rebuilt from its results folder alone.

A results folder (``results/<label>/``) holds the plan (``plan.json``) and one folder per finished
(row, seed) with its config, ``metrics.json`` and, for runs that stored them, the per-image
predictions ``predictions.npz`` (:mod:`pipelines.plan_results`, :mod:`pipelines.predictions`).
From those:

* :func:`write_report` -- ``report.md``, ``report.csv``, ``report.png``: per row mean ± s.d. of
  PublicTest accuracy (%) of the best-on-PublicTest epoch and of the final epoch, macro F1; the
  paired Δ against the reference row (both epochs) with its 95 % t interval over seeds, the paired
  t-test and Holm's correction within the plan's comparison family; where predictions exist, the
  paired bootstrap interval over seeds and test images and McNemar's exact test per seed
  (:mod:`pipelines.plan_stats`); the smallest Δ the plan's seeds detect at 80 % power, from the
  plan's own seed-to-seed s.d.; and the paper's Δ where the plan gives one;
* :func:`power_table` -- the seed-to-seed s.d. of the paired differences and the seeds needed to
  detect a given Δ;
* :func:`delta_figure` -- several plans side by side: each compared row's Δ with both intervals
  and the plan's smallest detectable Δ as a band;
* :func:`rank_agreement` -- does a short recipe (``<plan>_screen``) rank the rows as the full
  recipe (``<plan>``) does: Spearman's ρ and Kendall's τ over the rows both ran, and whether each
  Δ has the same sign;
* :func:`update_doc` -- the tables of every plan pasted between two markers of a markdown file
  (``docs/results.md``), so that the document is rebuilt from ``results/`` by one command.

Fields of a plan (its JSON file, copied into ``plan.json``; :func:`check_plan_fields`) that the
report reads besides rows and reference:

* ``"family": [row, ...]`` -- the rows compared with the reference, named before the plan runs.
  Holm corrects within exactly that family: ``m`` is the family's size, and a family row without
  a test yet (not run, or under 2 paired seeds) counts as p = 1. Rows outside it get their Δ and
  intervals but no Holm p ("outside family"). Without it, every non-reference row with a test is
  in the family.
* ``"superseded_by": LABEL, "superseded_note": WHY`` -- the results stay in the record, shown as
  superseded by plan ``LABEL`` with the note. Put them in ``results/<label>/plan.json`` to mark
  finished results (running the plan again keeps them); a plan file carrying them passes them to
  every results folder it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .config import make_config
from .plan_results import comparable, config_diff, is_finished, stored_config
from .plan_stats import (detectable_delta, holm, mcnemar_exact, paired_bootstrap, paired_delta,
                         pooled_sd, seeds_needed)
from .predictions import correct, load_predictions
from .run_dir import RunDir

#: The markers of the block :func:`update_doc` rewrites.
DOC_BEGIN = "<!-- plan-report:begin (python -m pipelines.experiments --report --doc ...) -->"
DOC_END = "<!-- plan-report:end -->"
#: The usage every figure of the report is measured on (the selection set).
USAGE = "PublicTest"
#: Significance level of the tests and the power statement; the power the latter asks for.
ALPHA, POWER = 0.05, 0.8


def check_plan_fields(plan: dict, where: str | Path) -> None:
    """Check a plan's ``family`` and ``superseded_by`` / ``superseded_note`` (module doc); a bad
    one raises ``ValueError`` naming ``where`` (the plan file or ``plan.json``) and the field."""
    names = [r["name"] for r in plan.get("rows", [])]
    ref = plan.get("reference", names[0] if names else None)
    if "family" in plan:
        fam = plan["family"]
        if not isinstance(fam, list) or not fam or not all(isinstance(n, str) for n in fam):
            raise ValueError(f"{where}: family must be a non-empty list of row names, got {fam!r}")
        unknown = [n for n in fam if n not in names]
        if unknown:
            raise ValueError(f"{where}: family names unknown row(s) {unknown}; rows: {', '.join(names)}")
        if ref in fam:
            raise ValueError(f"{where}: family holds the reference {ref!r}; it lists the rows compared "
                             "with the reference")
        if len(set(fam)) != len(fam):
            raise ValueError(f"{where}: family names a row twice: {fam}")
    by, note = plan.get("superseded_by"), plan.get("superseded_note")
    if by is not None or note is not None:
        if not isinstance(by, str) or not by.strip():
            raise ValueError(f"{where}: superseded_by must name the plan label that replaces it, got {by!r}")
        if not isinstance(note, str) or not note.strip():
            raise ValueError(f"{where}: superseded_by needs a superseded_note saying why, got {note!r}")


def _final_figures(folder: Path, summary: dict, epochs: list[dict], val_usage: str) -> tuple:
    """(accuracy, macro F1) of the final checkpoint on :data:`USAGE`: from the summary (runs that
    stored predictions), else ``eval_<USAGE>_final.json``, else the last epoch's validation when
    that was :data:`USAGE` (older runs); ``(None, None)`` when none says."""
    if summary.get(f"final_{USAGE}_acc") is not None:
        return summary[f"final_{USAGE}_acc"], summary.get(f"final_{USAGE}_f1")
    ev = RunDir(folder).eval_json(f"{USAGE}_final")
    if ev.is_file():
        rep = json.loads(ev.read_text())
        return rep.get("accuracy"), rep.get("macro_f1")
    if val_usage == USAGE and epochs and epochs[-1].get("val_acc") is not None:
        return epochs[-1]["val_acc"], epochs[-1].get("val_f1")
    return None, None


def collect(folder: Path) -> tuple[dict, list[dict]]:
    """(plan, one record per finished run) of a results folder (or a runs folder): the
    ``plan.json`` there says the rows, seeds and overrides; a run whose ``config.json`` does not
    match the plan's resolved config for its (row, seed) is left out, with a warning. A record
    holds the best and final checkpoints' accuracy and F1 and, where the run stored predictions,
    which :data:`USAGE` images each got right (``correct_best``, ``correct_final``) and their
    labels."""
    folder = Path(folder)
    if not (folder / "plan.json").is_file():
        raise FileNotFoundError(f"{folder}: no plan.json (not a plan's results folder)")
    plan = json.loads((folder / "plan.json").read_text())
    plan.setdefault("label", folder.name)
    check_plan_fields(plan, folder / "plan.json")
    extra = plan.get("set", {})
    records = []
    for row in plan["rows"]:
        over = {**plan.get("base", {}), **row.get("overrides", {}), **extra}
        for d in sorted((folder / row["name"]).glob("s*")):
            if not d.name[1:].isdigit() or not is_finished(d):
                continue
            seed = int(d.name[1:])
            cfg = make_config({**over, "seed": seed, "out": str(d)})
            expected = comparable(cfg)
            got = stored_config(d)
            if got is not None and got != expected:
                print(f"{d}: config differs from the plan ({', '.join(config_diff(got, expected))}); "
                      "left out of the report", file=sys.stderr)
                continue
            metrics = json.loads(RunDir(d).metrics_json.read_text())
            s = metrics["summary"]
            final_acc, final_f1 = _final_figures(d, s, metrics.get("epochs") or [], cfg.val_usage)
            pred = load_predictions(d)
            records.append({
                "plan": plan["label"], "row": row["name"], "seed": seed,
                "acc": s.get(f"best_{USAGE}_acc", s.get("best_val_acc")),
                "f1": s.get(f"best_{USAGE}_f1", s.get("best_val_f1")),
                "final_acc": final_acc, "final_f1": final_f1,
                "private_acc": s.get("best_PrivateTest_acc"), "epochs": s.get("epochs_run"),
                "correct_best": correct(pred, USAGE, "best"), "correct_final": correct(pred, USAGE, "final"),
                "labels": None if pred is None or USAGE not in pred else pred[USAGE]["label"],
            })
    return plan, records


def comparison_family(plan: dict) -> list[str] | None:
    """The rows the plan names as its comparison family, ``None`` when it names none."""
    return plan.get("family")


def _image_pairs(runs: dict[int, dict], ref: dict[int, dict], seeds: list[int], which: str,
                 where: str) -> tuple[list, list] | None:
    """Per seed of ``seeds``: (row, reference) ``correct_<which>`` arrays; ``None`` unless every
    seed has predictions in both, of the same images (a label mismatch is warned about)."""
    a, b = [], []
    for s in seeds:
        ra, rb = runs[s][f"correct_{which}"], ref[s][f"correct_{which}"]
        if ra is None or rb is None:
            return None
        if not np.array_equal(runs[s]["labels"], ref[s]["labels"]):
            print(f"{where}: seed {s}: its predictions are of other images than the reference's; "
                  "no image-level statistics", file=sys.stderr)
            return None
        a.append(ra)
        b.append(rb)
    return (a, b) if seeds else None


def _mean_sd(values: list) -> tuple[float | None, float | None]:
    if not values or any(v is None for v in values):
        return None, None
    v = np.asarray(values, float) * 100
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(plan: dict, records: list[dict]) -> list[dict]:
    """Per row: seeds, mean/s.d. of PublicTest accuracy (%) of the best and of the final
    checkpoint and of macro F1 (best); the paired Δ accuracy against the reference row with its
    95 % t interval and p, for both checkpoints; Holm's p within the plan's family
    (:func:`comparison_family`); where predictions exist, the paired bootstrap interval over seeds
    and images (both checkpoints) and McNemar's exact test per seed (best checkpoint); Δ F1; and
    the paper's Δ (the row's ``paper_delta`` in the plan). Missing figures are ``None``."""
    by_row: dict[str, dict[int, dict]] = {}
    for r in records:
        by_row.setdefault(r["row"], {})[r["seed"]] = r
    ref = by_row.get(plan["reference"], {})
    label = plan.get("label", Path(plan.get("path", "")).stem)
    family = comparison_family(plan)
    out = []
    none = {"n": 0, "mean": None, "lo": None, "hi": None, "p": None, "sd": None}
    for row in plan["rows"]:
        runs = by_row.get(row["name"], {})
        if not runs:
            continue
        acc_mean, acc_std = _mean_sd([r["acc"] for r in runs.values()])
        f1_mean, f1_std = (float(np.mean([r["f1"] for r in runs.values()])),
                           float(np.std([r["f1"] for r in runs.values()], ddof=1)) if len(runs) > 1 else 0.0)
        fin_mean, fin_std = _mean_sd([r["final_acc"] for r in runs.values()])
        shared = sorted(set(runs) & set(ref))
        is_ref = row["name"] == plan["reference"]
        compare = bool(shared) and not is_ref
        d = paired_delta([runs[s]["acc"] * 100 for s in shared], [ref[s]["acc"] * 100 for s in shared]) \
            if compare else none
        df1 = paired_delta([runs[s]["f1"] for s in shared], [ref[s]["f1"] for s in shared]) \
            if compare else none
        has_final = compare and all(runs[s]["final_acc"] is not None and ref[s]["final_acc"] is not None
                                    for s in shared)
        dfin = paired_delta([runs[s]["final_acc"] * 100 for s in shared],
                            [ref[s]["final_acc"] * 100 for s in shared]) if has_final else none
        boot = {"best": None, "final": None}
        mc = None
        if compare:
            for which in boot:
                pairs = _image_pairs(runs, ref, shared, which, f"{label}/{row['name']}")
                if pairs is not None:
                    boot[which] = paired_bootstrap(*pairs)
                    if which == "best":
                        mc = [mcnemar_exact(a, b) for a, b in zip(*pairs)]
        sig = [m for m in mc or [] if m["p"] < ALPHA]
        out.append({
            "plan": label, "row": row["name"], "reference": is_ref, "n_seeds": len(runs),
            "acc_mean": acc_mean, "acc_std": acc_std, "f1_mean": f1_mean, "f1_std": f1_std,
            "final_acc_mean": fin_mean, "final_acc_std": fin_std,
            "paired_seeds": d["n"], "delta_acc": d["mean"], "delta_lo": d["lo"], "delta_hi": d["hi"],
            "delta_sd": d["sd"], "paired_p": d["p"], "delta_f1": df1["mean"],
            "delta_final": dfin["mean"], "delta_final_lo": dfin["lo"], "delta_final_hi": dfin["hi"],
            "delta_final_p": dfin["p"],
            "boot_lo": boot["best"] and boot["best"]["lo"], "boot_hi": boot["best"] and boot["best"]["hi"],
            "boot_final_lo": boot["final"] and boot["final"]["lo"],
            "boot_final_hi": boot["final"] and boot["final"]["hi"],
            "mcnemar_seeds": None if mc is None else len(mc),
            "mcnemar_significant": None if mc is None else len(sig),
            "mcnemar_row_better": None if mc is None else sum(m["b"] > m["c"] for m in sig),
            "mcnemar_p": None if mc is None else ";".join(f"{m['p']:.3g}" for m in mc),
            "in_family": not is_ref and (family is None or row["name"] in family),
            "paper_delta": row.get("paper_delta"),
        })
    if family is None:    # every non-reference row with a test
        adjusted = holm([r["paired_p"] for r in out])
        for r, p in zip(out, adjusted):
            r["holm_p"] = p
    else:                 # exactly the named family: m = its size, an untested member counts as p = 1
        p_of = {r["row"]: r["paired_p"] for r in out}
        adjusted = dict(zip(family, holm([1.0 if p_of.get(n) is None else p_of[n] for n in family])))
        for r in out:
            r["holm_p"] = adjusted[r["row"]] if r["in_family"] and r["paired_p"] is not None else None
    for r in out:
        r["significant"] = r["holm_p"] is not None and r["holm_p"] < ALPHA
    return out


def plan_power(plan: dict, rows: list[dict], records: list[dict], alpha: float = ALPHA,
               power: float = POWER) -> dict | None:
    """The plan's own resolution: the s.d. of paired differences (best-epoch accuracy, pp) pooled
    over its comparisons with 2 or more paired seeds, and the smallest true Δ a two-sided paired
    t-test at ``alpha`` detects with probability ``power`` with the number of paired seeds its
    comparisons have: ``{"sd", "pairs", "comparisons", "detectable": {n seeds: Δ pp}}``, or
    ``None`` before any comparison has a spread."""
    rows = [r for r in rows if not r["reference"] and r["delta_sd"] is not None and r["delta_sd"] > 0]
    if not rows:
        return None
    by = {(r["row"], r["seed"]): r["acc"] * 100 for r in records}
    seeds = sorted({k[1] for k in by})
    diffs = [[by[(r["row"], s)] - by[(plan["reference"], s)] for s in seeds
              if (r["row"], s) in by and (plan["reference"], s) in by] for r in rows]
    sd = pooled_sd(diffs)
    ns = sorted({r["paired_seeds"] for r in rows}, reverse=True)
    return {"sd": sd, "pairs": sum(len(d) for d in diffs), "comparisons": len(rows), "diffs": diffs,
            "rows": rows, "detectable": {n: detectable_delta(n, sd, alpha, power) for n in ns}}


def _fmt(v, spec: str, none: str = "") -> str:
    return none if v is None else format(v, spec)


def _interval(lo, hi, none: str = "–") -> str:
    return none if lo is None else f"[{lo:+.2f}, {hi:+.2f}]"


def report_markdown(rows: list[dict]) -> str:
    """The report table (one plan) and its legend, markdown."""
    lines = ["| row | seeds | best acc (%) | final acc (%) | macro F1 (best) | Δ best (pp) [95 % CI, t] | "
             "bootstrap 95 % | p (paired t) | p (Holm) | McNemar p < 0.05 | Δ final (pp) [95 % CI, t] | "
             "bootstrap 95 % (final) | Δ F1 | paper Δ (pp) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        boot = boot_f = mcn = delta_f = ""
        if r["reference"]:
            delta = "reference"
        elif r["delta_acc"] is None:
            delta = "no shared seeds"
        else:
            ci = "" if r["delta_lo"] is None else " " + _interval(r["delta_lo"], r["delta_hi"])
            delta = f"{r['delta_acc']:+.2f}{ci}"
            boot = _interval(r["boot_lo"], r["boot_hi"])
            boot_f = _interval(r["boot_final_lo"], r["boot_final_hi"])
            mcn = "–" if r["mcnemar_seeds"] is None else (
                f"{r['mcnemar_significant']}/{r['mcnemar_seeds']} "
                f"(+{r['mcnemar_row_better']}/−{r['mcnemar_significant'] - r['mcnemar_row_better']})")
            delta_f = "–" if r["delta_final"] is None else (
                f"{r['delta_final']:+.2f}" + ("" if r["delta_final_lo"] is None else
                                              " " + _interval(r["delta_final_lo"], r["delta_final_hi"])))
        holm_cell = ("" if r["reference"] else "outside family" if not r["in_family"]
                     else _fmt(r["holm_p"], ".2g") + (" *" if r["significant"] else ""))
        final = "–" if r["final_acc_mean"] is None else f"{r['final_acc_mean']:.2f} ± {r['final_acc_std']:.2f}"
        lines.append(
            f"| {r['row']} | {r['n_seeds']} | {r['acc_mean']:.2f} ± {r['acc_std']:.2f} | {final} | "
            f"{r['f1_mean']:.4f} ± {r['f1_std']:.4f} | {delta} | {boot} | {_fmt(r['paired_p'], '.2g')} | "
            f"{holm_cell} | {mcn} | {delta_f} | {boot_f} | {_fmt(r['delta_f1'], '+.4f')} | "
            f"{_fmt(r['paper_delta'], '+.2f', '–')} |")
    note = ("\nMean ± s.d. over seeds of PublicTest accuracy: *best* = the best-on-PublicTest epoch "
            "(selected on the set it is scored on), *final* = the last epoch (no selection). Δ = mean "
            "paired difference to the reference row over the seeds both ran, with its 95 % confidence "
            "interval (paired t over seeds: seed-to-seed variation only). Bootstrap 95 %: percentile "
            "interval of Δ from a paired bootstrap over seeds and test images (seeds and, within each, "
            "the same images for row and reference drawn with replacement; 10,000 resamples), which also "
            "covers the sampling of the test images; McNemar: seeds whose exact McNemar test on the "
            "paired images has p < 0.05 (+ row better, − reference better); – = the runs stored no "
            "per-image predictions. p (Holm) corrects the paired t-test within the plan's comparison "
            "family; * = Holm p < 0.05. Paper Δ: the BioNIC paper's single-feature ablation (– where it "
            "gives none).\n")
    return "\n".join(lines) + "\n" + note


def family_markdown(plan: dict) -> str:
    """One line: which rows Holm's correction covers."""
    fam = comparison_family(plan)
    if fam is None:
        return ("Comparison family: every non-reference row with a test (the plan names no family); "
                "Holm over those.\n")
    return (f"Comparison family, named by the plan before it ran: {', '.join(fam)}; Holm over m = "
            f"{len(fam)} (a member without a test yet counts as p = 1).\n")


def power_markdown(pw: dict | None, alpha: float = ALPHA, power: float = POWER) -> str:
    """One line: the smallest Δ the plan's own seeds detect (:func:`plan_power`)."""
    if pw is None:
        return "Resolution: no comparison with 2 or more paired seeds yet.\n"
    det = "; ".join(f"{d:.2f} pp with {n} seeds" for n, d in pw["detectable"].items())
    return (f"Resolution: the plan's pooled s.d. of paired differences is {pw['sd']:.2f} pp "
            f"({pw['comparisons']} comparison{'s' * (pw['comparisons'] != 1)}, {pw['pairs']} pairs); the "
            f"smallest true Δ a two-sided paired t-test (α {alpha}, before Holm) detects with power "
            f"{power}: {det}.\n")


def superseded_markdown(plan: dict) -> str:
    """The supersession banner of a plan (empty when it is not superseded)."""
    if not plan.get("superseded_by"):
        return ""
    return (f"> **Superseded** by `{plan['superseded_by']}`: {plan['superseded_note'].strip()} "
            "These results stay in the record.\n")


def plan_title(plan: dict) -> str:
    """``<label> (reference: <row>)``, with ``: superseded by <label>`` where it is."""
    sup = f": superseded by {plan['superseded_by']}" if plan.get("superseded_by") else ""
    return f"{plan['label']} (reference: {plan['reference']}){sup}"


def plan_markdown(plan: dict, rows: list[dict], records: list[dict]) -> str:
    """Everything below a plan's title: supersession, table and legend, family, resolution."""
    parts = [superseded_markdown(plan), report_markdown(rows), family_markdown(plan),
             power_markdown(plan_power(plan, rows, records))]
    return "\n".join(p for p in parts if p)


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
    (dest / "report.md").write_text(f"## {plan_title(plan)}\n\n" + plan_markdown(plan, rows, records))
    plot(rows, plan, dest / "report.png", plan_power(plan, rows, records))
    return dest / "report.md"


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
#: Colours of the figures: Holm-significant, other Δ, the bootstrap interval, the detectable band.
SIG, PLAIN, BOOT, BAND = "#c0392b", "#4a7ab5", "#e08e0b", "#d9d9d9"


def _draw_deltas(ax, rows: list[dict], y: np.ndarray, pw: dict | None, paper: bool = True) -> None:
    """Δ (best epoch) with its t interval at each ``y``, the bootstrap interval just below, the
    final epoch's Δ as a hollow circle just above, a zero line and ± the smallest Δ detectable with
    the plan's most common number of paired seeds as a grey band."""
    if pw is not None:
        n, det = max(pw["detectable"].items(), key=lambda kv: sum(r["paired_seeds"] == kv[0] for r in pw["rows"]))
        ax.axvspan(-det, det, color=BAND, alpha=0.6, lw=0, gid="detectable",
                   label=f"|Δ| < {det:.2f} pp: detected with power < {POWER} ({n} seeds)")
    ax.axvline(0, color="#777", lw=1, gid="zero")
    for yi, r in zip(y, rows):
        if r["delta_acc"] is None:
            continue
        lo = r["delta_lo"] if r["delta_lo"] is not None else r["delta_acc"]
        hi = r["delta_hi"] if r["delta_hi"] is not None else r["delta_acc"]
        eb = ax.errorbar([r["delta_acc"]], [yi], xerr=[[r["delta_acc"] - lo], [hi - r["delta_acc"]]],
                         fmt="o", capsize=3, color=SIG if r["significant"] else PLAIN)
        eb[0].set_gid(f"delta:{r['row']}")
        eb[2][0].set_gid(f"t-interval:{r['row']}")
        if r["boot_lo"] is not None:
            ax.plot([r["boot_lo"], r["boot_hi"]], [yi - 0.22] * 2, color=BOOT, lw=2.5, solid_capstyle="butt",
                    gid=f"bootstrap:{r['row']}")
        if r["delta_final"] is not None:
            ax.plot([r["delta_final"]], [yi + 0.22], "o", mfc="none", color="#333", ms=5,
                    gid=f"final:{r['row']}")
        if paper and r["paper_delta"] is not None:
            ax.plot([r["paper_delta"]], [yi], "x", color="k", ms=7, gid=f"paper:{r['row']}")


def plot(rows: list[dict], plan: dict, path: Path, pw: dict | None = None) -> None:
    """Left: accuracy mean ± s.d. per row (filled: best epoch, hollow: final epoch); right: Δ vs
    the reference with its 95 % t interval, the bootstrap interval below it (orange), the final
    epoch's Δ (hollow), the paper's Δ (cross), and the band of Δ the plan cannot detect."""
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(11, 1.8 + 0.42 * n), constrained_layout=True)
    ax_a, ax_d = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)[::-1].astype(float)
    ax_a.errorbar([r["acc_mean"] for r in rows], y, xerr=[r["acc_std"] for r in rows], fmt="o",
                  color="#333", capsize=3, label="best epoch")
    fin = [(yi, r) for yi, r in zip(y, rows) if r["final_acc_mean"] is not None]
    if fin:
        ax_a.errorbar([r["final_acc_mean"] for _, r in fin], [yi + 0.22 for yi, _ in fin],
                      xerr=[r["final_acc_std"] for _, r in fin], fmt="o", mfc="none", color="#888",
                      capsize=2, label="final epoch")
        ax_a.legend(fontsize=7, loc="lower left")
    ax_a.set_yticks(y, [r["row"] for r in rows], fontsize=8)
    ax_a.set_xlabel("PublicTest accuracy (%), mean ± s.d. over seeds")
    _draw_deltas(ax_d, rows, y, pw)
    ax_d.set_xlabel(f"Δ accuracy vs {plan['reference']} (pp), 95 % CI: paired t over seeds;\n"
                    "orange: bootstrap over seeds and images; hollow: final epoch; × paper's Δ;\n"
                    f"red: Holm p < 0.05; grey: |Δ| detected with power < {POWER}", fontsize=8)
    title = plan_title(plan)
    fig.suptitle(f"{title}: {n} rows")
    fig.savefig(path, dpi=120)


def delta_figure(labels: list[str | Path], out_png: str | Path, results: str | Path = "results",
                 rows: list[str] | None = None) -> Path:
    """One figure with several plans side by side (one panel each, a shared Δ axis): each compared
    row's Δ against the plan's reference (best epoch) with its 95 % t interval and, where the runs
    stored predictions, the bootstrap interval over seeds and images; the final epoch's Δ (hollow);
    a zero line; and ± the smallest Δ the plan detects at power 0.8 as a grey band. ``labels``:
    plan labels under ``results`` or results folders; ``rows``: the rows to show (default: each
    plan's comparison family, else every non-reference row). Returns ``out_png``."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    delta_figure_of(plan_folders([str(x) for x in labels], Path(results)), rows).savefig(out_png, dpi=130)
    return out_png


def delta_figure_of(folders: list[Path], rows: list[str] | None = None):
    """The matplotlib ``Figure`` of :func:`delta_figure` for results folders (one axes per plan;
    artists tagged ``delta:<row>``, ``t-interval:<row>``, ``bootstrap:<row>``, ``final:<row>``,
    ``detectable`` and ``zero`` by gid)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = []
    for f in folders:
        plan, records = collect(f)
        summary = summarize(plan, records)
        want = rows or comparison_family(plan) or [r["row"] for r in summary if not r["reference"]]
        shown = [r for name in want for r in summary if r["row"] == name and r["delta_acc"] is not None]
        if not shown:
            raise ValueError(f"{f}: none of the rows {want} has a Δ against {plan['reference']} yet")
        panels.append((plan, shown, plan_power(plan, summary, records)))
    height = 1.8 + 0.42 * max(len(p[1]) for p in panels)
    fig = Figure(figsize=(3.6 * len(panels) + 1.2, height), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    for ax, (plan, shown, pw) in zip(axes, panels):
        y = np.arange(len(shown))[::-1].astype(float)
        _draw_deltas(ax, shown, y, pw, paper=False)
        ax.set_yticks(y, [r["row"] for r in shown], fontsize=8)
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.set_title(f"{plan['label']}\nvs {plan['reference']}"
                     + (" (superseded)" if plan.get("superseded_by") else ""), fontsize=9)
        ax.set_xlabel("Δ accuracy (pp)")
        if pw is not None:
            ax.legend(fontsize=6, loc="lower right")
    fig.legend(handles=[
        Line2D([], [], color=PLAIN, marker="o", label="Δ best epoch, 95 % CI (paired t over seeds)"),
        Line2D([], [], color=SIG, marker="o", ls="", label="Holm p < 0.05"),
        Line2D([], [], color=BOOT, lw=2.5, label="95 % bootstrap over seeds and images"),
        Line2D([], [], color="#333", marker="o", mfc="none", ls="", label="Δ final epoch")],
        loc="outside lower center", ncols=4, fontsize=7)
    return fig


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


def power_table(folder: Path, delta: float, alpha: float = ALPHA, power: float = POWER,
                seeds: tuple[int, ...] = (3, 5, 10)) -> str:
    """The seed-to-seed s.d. of paired differences (accuracy, pp) of each comparison in this plan's
    results, pooled over them (the plan's own, :func:`plan_power`); the seeds needed to detect
    ``delta``; and the smallest difference that ``seeds`` paired seeds, and the plan's own numbers
    of paired seeds, detect at the pooled s.d. (:mod:`pipelines.plan_stats`)."""
    plan, records = collect(folder)
    pw = plan_power(plan, summarize(plan, records), records, alpha, power)
    if pw is None:
        raise ValueError(f"{folder}: no comparison with 2 or more paired seeds yet")
    lines = [f"{plan['label']}: paired differences to {plan['reference']} (PublicTest accuracy, pp); "
             f"seeds to detect |Δ| = {delta} pp, two-sided paired t, alpha {alpha}, power {power}",
             f"{'row':32s} {'pairs':>5s} {'mean Δ':>8s} {'s.d. Δ':>8s} {'seeds':>6s}"]
    for r in pw["rows"]:
        lines.append(f"{r['row']:32s} {r['paired_seeds']:5d} {r['delta_acc']:+8.2f} {r['delta_sd']:8.2f} "
                     f"{seeds_needed(r['delta_sd'], delta, alpha, power):6d}")
    sd = pw["sd"]
    lines.append(f"{'pooled':32s} {pw['pairs']:5d} {'':8s} {sd:8.2f} {seeds_needed(sd, delta, alpha, power):6d}")
    own = set(pw["detectable"])
    lines.append("smallest |Δ| detected at the pooled s.d.: " + ", ".join(
        f"{n} seeds {detectable_delta(n, sd, alpha, power):.2f} pp" + (" (this plan)" if n in own else "")
        for n in sorted(set(seeds) | own)))
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
        plan = json.loads((f / "plan.json").read_text())
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
        parts.append(f"#### {plan_title(plan)}\n")
        if not rows:
            parts.append(superseded_markdown(plan) + "No finished runs yet.\n")
            continue
        parts.append(plan_markdown(plan, rows, records))
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
