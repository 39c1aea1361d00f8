"""The plan report across recipes: rank agreement of a short recipe with the full one, and the
block of docs/results.md rebuilt from results/ (pipelines.plan_report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pipelines import experiments as ex
from pipelines import plan_report as rep
from tests.helpers import lines_with_gid

ROWS = [{"name": "full", "overrides": {}}, {"name": "b", "overrides": {"lr": 0.002}},
        {"name": "c", "overrides": {"lr": 0.004}}, {"name": "d", "overrides": {"lr": 0.006}}]


def _plan_folder(root: Path, label: str, accs: dict[str, list[float]], recipe: dict | None = None) -> Path:
    """A results folder ``root/label`` of a 4-row plan with finished runs of the given accuracies."""
    folder = root / label
    folder.mkdir(parents=True)
    extra = recipe or {}
    plan = {"rows": ROWS, "reference": "full", "label": label, "recipes": {"screen": {"epochs": 2}},
            "set": extra}
    (folder / "plan.json").write_text(json.dumps(plan))
    for row in ROWS:
        for seed, acc in enumerate(accs.get(row["name"], []), 1):
            d = folder / row["name"] / f"s{seed}"
            d.mkdir(parents=True)
            (d / "final.pt").write_bytes(b"x")
            ex.Run(row["name"], seed, d, {**row["overrides"], **extra}).config().save(d / "config.json")
            (d / "metrics.json").write_text(json.dumps({"summary": {
                "finished": True, "best_PublicTest_acc": acc, "best_PublicTest_f1": acc - 0.1}}))
    return folder


@pytest.fixture
def two_recipes(tmp_path):
    # screen: full > b > c > d; full recipe: c > full > b > d (c changes the sign of its Δ)
    screen = _plan_folder(tmp_path, "abl_screen", {
        "full": [0.50, 0.51], "b": [0.49, 0.505], "c": [0.48, 0.49], "d": [0.40, 0.42]},
        recipe={"epochs": 2})
    full = _plan_folder(tmp_path, "abl", {
        "full": [0.60, 0.61, 0.60], "b": [0.58, 0.59, 0.585], "c": [0.605, 0.615, 0.61], "d": [0.5, 0.5, 0.51]})
    return screen, full


def test_rank_agreement_is_spearman_and_kendall_over_the_shared_rows(two_recipes):
    screen, full = two_recipes
    agr = rep.rank_agreement(screen, full)
    rows = {r["row"]: r for r in agr["rows"]}
    assert agr["n"] == 4 and agr["short"] == "abl_screen" and agr["full"] == "abl"
    assert [rows[n]["short_rank"] for n in ("full", "b", "c", "d")] == [1, 2, 3, 4]
    assert [rows[n]["full_rank"] for n in ("full", "b", "c", "d")] == [2, 3, 1, 4]
    a = [50.5, 49.75, 48.5, 41.0]
    b = [60 + 1 / 3, 58.5, 61.0, 50 + 1 / 3]
    assert agr["spearman"] == pytest.approx(stats.spearmanr(a, b)[0])
    assert agr["kendall"] == pytest.approx(stats.kendalltau(a, b)[0])
    # c is below the reference in the screen and above it in the full recipe
    assert rows["c"]["same_sign"] is False and rows["b"]["same_sign"] is True
    assert (agr["same_sign"], agr["compared"]) == (2, 3) and rows["full"]["same_sign"] is None
    md = rep.ranking_markdown(agr)
    assert "| c | 48.50 [2] | 3 | -2.00 | 61.00 [3] | 1 | +0.67 | **no** |" in md
    assert "same sign in 2 of 3 rows" in md


def test_rank_agreement_needs_shared_rows_and_says_when_too_few(tmp_path):
    s = _plan_folder(tmp_path, "p_screen", {"full": [0.5], "b": [0.4]}, recipe={"epochs": 2})
    f = _plan_folder(tmp_path, "p", {"full": [0.6], "b": [0.5]})
    agr = rep.rank_agreement(s, f)
    assert agr["n"] == 2 and agr["spearman"] is None
    assert "too few for a rank correlation" in rep.ranking_markdown(agr)
    e = _plan_folder(tmp_path, "q", {})
    with pytest.raises(ValueError, match="no row has finished runs in both"):
        rep.rank_agreement(s, e)


def test_recipe_pairs_match_a_named_recipe_only(two_recipes, tmp_path):
    screen, full = two_recipes
    other = _plan_folder(tmp_path, "abl_wide", {"full": [0.5]})        # 'wide' is not a recipe of the plan
    assert rep.recipe_pairs([full, screen, other]) == [(screen, full)]


def test_update_doc_rewrites_only_the_marked_block(two_recipes, tmp_path):
    screen, full = two_recipes
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    before, after = "# Results\n\nkept above\n\n", "\n\n## Kept below\n"
    doc.write_text(before + rep.DOC_BEGIN + "\nold table\n" + rep.DOC_END + after)
    rep.write_report(full)
    rep.update_doc(doc, [full, screen])
    text = doc.read_text()
    assert text.startswith(before + rep.DOC_BEGIN) and text.endswith(rep.DOC_END + after)
    assert "old table" not in text
    assert "#### abl (reference: full)" in text and "#### abl_screen (reference: full)" in text
    assert "![abl](../abl/report.png)" in text                 # relative to the document
    assert "#### Does abl_screen rank the rows as abl does?" in text
    rep.update_doc(doc, [full, screen])
    assert doc.read_text() == text                              # rebuilding is idempotent


def test_update_doc_without_markers_is_a_clear_error_and_leaves_the_file(two_recipes, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# no markers\n")
    with pytest.raises(ValueError, match=r"results\.md: needs one line"):
        rep.update_doc(doc, list(two_recipes))
    assert doc.read_text() == "# no markers\n"


def test_cli_report_with_doc_and_compare(two_recipes, tmp_path, capsys):
    doc = tmp_path / "r.md"
    doc.write_text(f"x\n{rep.DOC_BEGIN}\n{rep.DOC_END}\n")
    assert ex.main(["--report", "--results", str(tmp_path), "--doc", str(doc)]) == 0
    assert (tmp_path / "abl" / "report.png").is_file() and "![abl](abl/report.png)" in doc.read_text()
    assert ex.main(["--compare", "abl_screen", "abl", "--results", str(tmp_path)]) == 0
    assert "Spearman" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ex.main(["--doc", str(doc)])


@pytest.mark.parametrize("n", [3, 4, 5])
def test_spearman_p_is_exact_for_few_rows(n):
    # rows ranked alike: of the n! pairings only that one and its reverse reach |rho| = 1
    a = [float(i) for i in range(n)]
    assert rep.spearman_exact_p(a, [2 * x + 1 for x in a]) == pytest.approx(2 / np.prod(range(1, n + 1)))
    # scipy's t approximation calls the same ranking certain
    assert stats.spearmanr(a, [2 * x + 1 for x in a])[1] < 1e-6


def test_spearman_exact_p_of_an_unrelated_ranking_is_far_from_significant():
    assert rep.spearman_exact_p([0.0, 1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 0.0, 3.0, 1.0]) > 0.5


def test_rank_agreement_reports_the_exact_spearman_p(two_recipes):
    agr = rep.rank_agreement(*two_recipes)
    a = [50.5, 49.75, 48.5, 41.0]
    b = [60 + 1 / 3, 58.5, 61.0, 50 + 1 / 3]
    assert agr["spearman_p"] == pytest.approx(rep.spearman_exact_p(a, b))
    # ranks (4, 3, 2, 1) against (3, 2, 4, 1): rho = 0.4; 18 of the 24 pairings have |rho| >= 0.4
    assert agr["spearman"] == pytest.approx(0.4) and agr["spearman_p"] == pytest.approx(18 / 24)
    assert agr["spearman_p"] > stats.spearmanr(a, b)[1]


# ------------------------------------------------------------------------------------------------
# per-image statistics, comparison families, supersession, resolution, the Δ figure
# ------------------------------------------------------------------------------------------------
from pipelines import plan_stats as ps  # noqa: E402
from pipelines import predictions as P  # noqa: E402

N_IMAGES = 400


def _correct(rng, p: float) -> np.ndarray:
    return rng.random(N_IMAGES) < p


def _pred_folder(root: Path, label: str, rows: list[dict], correct: dict[str, list[tuple]],
                 old: dict[str, list[tuple[float, float]]] | None = None, **plan_fields) -> Path:
    """A results folder of ``rows``: for each row in ``correct`` one finished run per (best, final)
    pair of (N,) bool arrays, with its predictions and summary; for each row in ``old`` runs of
    before predictions were stored: (best accuracy, last epoch's accuracy) from metrics.json only."""
    folder = root / label
    folder.mkdir(parents=True)
    plan = {"rows": rows, "reference": rows[0]["name"], "label": label, **plan_fields}
    (folder / "plan.json").write_text(json.dumps(plan))
    labels = np.random.default_rng(99).integers(0, 7, N_IMAGES)
    over = {r["name"]: r["overrides"] for r in rows}
    for name, seeds in {**correct, **(old or {})}.items():
        for seed, pair in enumerate(seeds, 1):
            d = folder / name / f"s{seed}"
            d.mkdir(parents=True)
            ex.Run(name, seed, d, over[name]).config().save(d / "config.json")
            if name in correct:
                best, final = pair
                arrays = {"PublicTest_label": labels, "PublicTest_best": np.where(best, labels, (labels + 1) % 7),
                          "PublicTest_final": np.where(final, labels, (labels + 2) % 7)}
                P.save_predictions(d / "predictions.npz", arrays, ["PublicTest"], best_epoch=3, final_epoch=4,
                                   tta_flip=False)
                summary = {"finished": True, "best_PublicTest_acc": best.mean(), "best_PublicTest_f1": 0.4,
                           "final_PublicTest_acc": final.mean(), "final_PublicTest_f1": 0.4}
                epochs = []
            else:
                summary = {"finished": True, "best_PublicTest_acc": pair[0], "best_PublicTest_f1": 0.4}
                epochs = [{"epoch": 1, "val_acc": pair[0], "val_f1": 0.4}, {"epoch": 2, "val_acc": pair[1]}]
            (d / "metrics.json").write_text(json.dumps({"summary": summary, "epochs": epochs}, default=float))
    return folder


ROWS5 = [{"name": n, "overrides": {"lr": 0.001 * (i + 1)}} for i, n in enumerate(["ref", "b", "c", "d", "e"])]


@pytest.fixture
def with_predictions(tmp_path):
    """ref, b (better by ~8 pp on seeds 1-3), c (old runs: no predictions), d (like ref)."""
    rng = np.random.default_rng(5)
    ref = [(_correct(rng, 0.5), _correct(rng, 0.5)) for _ in range(3)]
    b = [(r | _correct(rng, 0.16), f | _correct(rng, 0.1)) for r, f in ref]   # right where ref is, and more
    d = [(np.where(rng.random(N_IMAGES) < 0.5, r, ~r), f) for r, f in ref]
    old = {"c": [(0.52, 0.50), (0.49, 0.51), (0.50, 0.49)]}
    return _pred_folder(tmp_path, "pp", ROWS5[:4], {"ref": ref, "b": b, "d": d}, old), ref, b, d


def test_report_gives_the_bootstrap_and_mcnemar_where_predictions_exist(with_predictions):
    from scipy import stats

    folder, ref, b, d = with_predictions
    rows = {r["row"]: r for r in rep.summarize(*rep.collect(folder))}
    rb = rows["b"]
    want = ps.paired_bootstrap([x for x, _ in b], [x for x, _ in ref])
    assert (rb["boot_lo"], rb["boot_hi"]) == pytest.approx((want["lo"], want["hi"]))
    assert want["mean"] == pytest.approx(rb["delta_acc"])          # the same Δ as the summaries give
    want_f = ps.paired_bootstrap([f for _, f in b], [f for _, f in ref])
    assert (rb["boot_final_lo"], rb["boot_final_hi"]) == pytest.approx((want_f["lo"], want_f["hi"]))
    assert rb["delta_final"] == pytest.approx(np.mean([100 * (f.mean() - g.mean()) for (_, f), (_, g) in zip(b, ref)]))
    # McNemar by hand: b is right wherever ref is, so every discordant image favours b
    ps_ = [stats.binomtest(int((x & ~y).sum()), int((x ^ y).sum()), 0.5).pvalue for (x, _), (y, _) in zip(b, ref)]
    assert rb["mcnemar_p"] == ";".join(f"{p:.3g}" for p in ps_)
    assert rb["mcnemar_significant"] == sum(p < 0.05 for p in ps_) == 3 and rb["mcnemar_row_better"] == 3
    # old runs: their final epoch from metrics.json's last epoch, no image-level statistics
    rc = rows["c"]
    assert rc["final_acc_mean"] == pytest.approx(50.0) and rc["delta_final"] is not None
    assert rc["boot_lo"] is None and rc["mcnemar_seeds"] is None
    md = rep.report_markdown(list(rows.values()))
    line = {ln.split(" | ")[0][2:]: ln for ln in md.splitlines() if ln.startswith("| ")}
    assert f"| {rep._interval(want['lo'], want['hi'])} |" in line["b"] and "| 3/3 (+3/−0) |" in line["b"]
    cells = line["c"].split(" | ")
    assert cells[6] == "–" and cells[9] == "–" and cells[11] == "–"      # bootstrap, McNemar, bootstrap final
    assert rows["d"]["mcnemar_row_better"] == 0


def test_image_statistics_need_the_same_images(with_predictions, capsys):
    folder = with_predictions[0]
    f = folder / "d" / "s2" / "predictions.npz"
    pred = P.load_predictions(f.parent)
    arrays = {f"PublicTest_{k}": v for k, v in pred["PublicTest"].items()}
    arrays["PublicTest_label"] = (arrays["PublicTest_label"] + 1) % 7
    P.save_predictions(f, arrays, ["PublicTest"], best_epoch=3, final_epoch=4, tta_flip=False)
    rows = {r["row"]: r for r in rep.summarize(*rep.collect(folder))}
    assert rows["d"]["boot_lo"] is None and rows["d"]["mcnemar_seeds"] is None
    assert "seed 2: its predictions are of other images" in capsys.readouterr().err


def test_holm_corrects_within_exactly_the_named_family(tmp_path):
    from scipy import stats

    accs = {"ref": [0.50, 0.52, 0.51], "b": [0.53, 0.56, 0.54], "c": [0.51, 0.525, 0.515], "d": [0.49, 0.50, 0.505]}
    old = {k: [(a, a) for a in v] for k, v in accs.items()}
    p = {k: stats.ttest_rel(np.multiply(v, 100), np.multiply(accs["ref"], 100)).pvalue for k, v in accs.items() if k != "ref"}
    fam = _pred_folder(tmp_path, "fam", ROWS5, {}, old, family=["b", "c", "e"])    # e: not run yet
    rows = {r["row"]: r for r in rep.summarize(*rep.collect(fam))}
    want = ps.holm([p["b"], p["c"], 1.0])                                            # m = 3, e counts as p = 1
    assert rows["b"]["holm_p"] == pytest.approx(want[0]) and rows["c"]["holm_p"] == pytest.approx(want[1])
    assert rows["d"]["holm_p"] is None and not rows["d"]["in_family"] and not rows["d"]["significant"]
    assert rows["d"]["paired_p"] == pytest.approx(p["d"]) and rows["d"]["delta_lo"] is not None
    md = rep.plan_markdown(*rep.collect(fam)[:1], list(rows.values()), rep.collect(fam)[1])
    assert "| outside family |" in md.splitlines()[5]                               # the d row
    assert "named by the plan before it ran: b, c, e; Holm over m = 3" in md
    # without a family: every non-reference row with a test (the default rule)
    nofam = _pred_folder(tmp_path, "nofam", ROWS5, {}, old)
    rows = {r["row"]: r for r in rep.summarize(*rep.collect(nofam))}
    assert [rows[k]["holm_p"] for k in "bcd"] == pytest.approx(ps.holm([p["b"], p["c"], p["d"]]))
    assert all(rows[k]["in_family"] for k in "bcd")


@pytest.mark.parametrize("fields, message", [
    ({"family": ["b", "zz"]}, r"family names unknown row\(s\) \['zz'\]"),
    ({"family": ["ref", "b"]}, "family holds the reference 'ref'"),
    ({"family": "b"}, "family must be a non-empty list"),
    ({"family": []}, "family must be a non-empty list"),
    ({"family": ["b", "b"]}, "family names a row twice"),
    ({"superseded_by": "new"}, "superseded_by needs a superseded_note"),
    ({"superseded_note": "why"}, "superseded_by must name the plan label"),
])
def test_load_plan_checks_family_and_supersession(tmp_path, fields, message):
    path = tmp_path / "myplan.json"
    path.write_text(json.dumps({"reference": "ref", "rows": ROWS5[:3], **fields}))
    with pytest.raises(ValueError, match=rf"myplan\.json: {message}"):
        ex.load_plan(str(path))
    folder = tmp_path / "res"
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps({"reference": "ref", "rows": ROWS5[:3], **fields}))
    with pytest.raises(ValueError, match=rf"plan\.json: {message}"):
        rep.collect(folder)


def test_a_valid_family_and_supersession_pass_into_the_results_plan(tmp_path, monkeypatch):
    path = tmp_path / "myplan.json"
    path.write_text(json.dumps({"reference": "ref", "rows": ROWS5[:3], "family": ["b", "c"],
                                "superseded_by": "newplan", "superseded_note": "unmatched nulls."}))
    plan = ex.load_plan(str(path))
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: 0)
    monkeypatch.setattr(ex, "_cuda_available", lambda: False)
    monkeypatch.setattr(ex.runtime, "default_threads", lambda local_processes=1: 1)
    ex.run_plan(plan, [1], tmp_path / "runs", progress=False, results=tmp_path / "results")
    stored = json.loads((tmp_path / "results" / "myplan" / "plan.json").read_text())
    assert stored["family"] == ["b", "c"] and stored["superseded_by"] == "newplan"


def test_a_superseded_plan_is_shown_as_such_with_its_note(with_predictions, tmp_path):
    folder = with_predictions[0]
    plan = json.loads((folder / "plan.json").read_text())
    plan.update(superseded_by="pp_matched", superseded_note="The nulls were not matched per projection.")
    (folder / "plan.json").write_text(json.dumps(plan))
    md = rep.write_report(folder).read_text()
    assert md.startswith("## pp (reference: ref): superseded by pp_matched\n")
    assert "> **Superseded** by `pp_matched`: The nulls were not matched per projection." in md
    doc = tmp_path / "doc.md"
    doc.write_text(f"{rep.DOC_BEGIN}\n{rep.DOC_END}\n")
    rep.update_doc(doc, [folder])
    text = doc.read_text()
    assert "#### pp (reference: ref): superseded by pp_matched" in text and "not matched per projection" in text
    assert "| b | 3 |" in text                                                  # the results stay


def test_the_report_states_the_plans_own_resolution(with_predictions, capsys):
    folder = with_predictions[0]
    plan, records = rep.collect(folder)
    rows = rep.summarize(plan, records)
    by = {(r["row"], r["seed"]): 100 * r["acc"] for r in records}
    diffs = [[by[(n, s)] - by[("ref", s)] for s in (1, 2, 3)] for n in ("b", "c", "d")]
    sd = ps.pooled_sd(diffs)
    pw = rep.plan_power(plan, rows, records)
    assert pw["sd"] == pytest.approx(sd) and pw["pairs"] == 9 and pw["comparisons"] == 3
    assert pw["detectable"] == {3: pytest.approx(ps.detectable_delta(3, sd))}
    md = rep.plan_markdown(plan, rows, records)
    assert f"pooled s.d. of paired differences is {sd:.2f} pp (3 comparisons, 9 pairs)" in md
    assert f"{ps.detectable_delta(3, sd):.2f} pp with 3 seeds" in md
    assert ex.main(["--power", str(folder), "--delta", "1"]) == 0
    assert f"3 seeds {ps.detectable_delta(3, sd):.2f} pp (this plan)" in capsys.readouterr().out


def test_delta_figure_draws_each_plan_with_both_intervals_and_the_detectable_band(with_predictions, tmp_path,
                                                                                  monkeypatch):
    folder = with_predictions[0]
    rng = np.random.default_rng(7)
    ref = [(_correct(rng, 0.5), _correct(rng, 0.5)) for _ in range(5)]
    other = _pred_folder(tmp_path, "other", ROWS5[:3], {"ref": ref, "b": [(_correct(rng, 0.52), _correct(rng, 0.5))
                                                                          for _ in range(5)]},
                         {"c": [(0.5, 0.5)] * 5}, family=["b", "c"])
    fig = rep.delta_figure_of([folder, other])
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    for ax, f in zip(fig.axes, (folder, other)):
        plan, records = rep.collect(f)
        rows = {r["row"]: r for r in rep.summarize(plan, records)}
        shown = plan.get("family") or ["b", "c", "d"]
        assert [t.get_text() for t in ax.get_yticklabels()] == shown
        for name in shown:
            r = rows[name]
            seg = [c for c in ax.collections if c.get_gid() == f"t-interval:{name}"][0].get_segments()[0]
            assert (seg[0][0], seg[1][0]) == pytest.approx((r["delta_lo"], r["delta_hi"]))
            boot = lines_with_gid(ax, f"bootstrap:{name}")
            if r["boot_lo"] is None:
                assert boot == []
            else:
                assert tuple(boot[0].get_xdata()) == pytest.approx((r["boot_lo"], r["boot_hi"]))
            assert lines_with_gid(ax, f"final:{name}")[0].get_xdata()[0] == pytest.approx(r["delta_final"])
        band = [p for p in ax.patches if p.get_gid() == "detectable"][0]
        det = rep.plan_power(plan, list(rows.values()), records)["detectable"]
        x0, x1 = band.get_x(), band.get_x() + band.get_width()
        assert (x0, x1) == pytest.approx((-det[max(det)], det[max(det)]))
        assert lines_with_gid(ax, "zero")[0].get_xdata()[0] == 0
    out = rep.delta_figure([folder.name, other.name], tmp_path / "figs" / "delta.png", results=tmp_path)
    assert out.stat().st_size > 5000
    assert ex.main(["--report", "pp", "other", "--results", str(tmp_path), "--delta-figure",
                    str(tmp_path / "cli.png")]) == 0 and (tmp_path / "cli.png").is_file()
    drawn = []
    monkeypatch.setattr(ex, "delta_figure", lambda folders, png, results: drawn.append(folders) or Path(png))
    assert ex.main(["--report", "pp", "other", "--results", str(tmp_path), "--delta-figure",
                    str(tmp_path / "only.png"), "--delta-plans", "other"]) == 0
    assert drawn == [[tmp_path / "other"]]
    with pytest.raises(SystemExit):
        ex.main(["--report", "pp", "--results", str(tmp_path), "--delta-plans", "other"])
    with pytest.raises(ValueError, match="none of the rows"):
        rep.delta_figure_of([folder], rows=["nope"])


def test_running_a_plan_again_keeps_the_supersession_mark_and_refuses_a_new_family(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "_execute", lambda cmd, log, cwd: 0)
    monkeypatch.setattr(ex, "_cuda_available", lambda: False)
    monkeypatch.setattr(ex.runtime, "default_threads", lambda local_processes=1: 1)
    path = tmp_path / "myplan.json"
    path.write_text(json.dumps({"reference": "ref", "rows": ROWS5[:3]}))
    results = tmp_path / "results"
    ex.run_plan(ex.load_plan(str(path)), [1], tmp_path / "runs", progress=False, results=results)
    stored = results / "myplan" / "plan.json"
    mark = {"superseded_by": "newplan", "superseded_note": "why."}
    stored.write_text(json.dumps({**json.loads(stored.read_text()), **mark}))
    ex.run_plan(ex.load_plan(str(path)), [1, 2], tmp_path / "runs", progress=False, results=results)
    again = json.loads(stored.read_text())
    assert again["seeds"] == [1, 2] and {k: again[k] for k in mark} == mark
    # a family named after results exist would re-pick the comparisons: refused
    (results / "myplan" / "b" / "s1").mkdir(parents=True)
    (results / "myplan" / "b" / "s1" / "metrics.json").write_text("{}")
    path.write_text(json.dumps({"reference": "ref", "rows": ROWS5[:3], "family": ["b"]}))
    with pytest.raises(ValueError, match=r"plan\.json: its results ran with comparison family None"):
        ex.run_plan(ex.load_plan(str(path)), [1], tmp_path / "runs", progress=False, results=results)
    assert json.loads(stored.read_text()).get("family") is None
