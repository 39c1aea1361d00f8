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
