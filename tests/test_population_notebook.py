"""notebooks/population_query.ipynb: committed without outputs; runs top to bottom (a population
query of a depth slab through the fake CAVE server, built, compiled, trained for 60 steps) in a
kernel of this interpreter importing this checkout, in seconds; its rendered page
docs/population_query.md shows the notebook as it is now."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import assert_page_shows_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "population_query.ipynb"
PAGE = ROOT / "docs" / "population_query.md"


def test_population_notebook_is_committed_without_outputs():
    code = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)


def test_rendered_page_shows_the_population_notebook_as_it_is():
    page = assert_page_shows_notebook(PAGE, NOTEBOOK, "python scripts/render_notebook.py --notebook "
                                      "notebooks/population_query.ipynb --out docs/population_query.md")
    assert "funnel: {" in page and "CorticalColumn(spec='slab'" in page and "loss " in page


def test_population_notebook_runs(tmp_path):
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError as e:  # fail, not skip: CI must run the notebook
        pytest.fail(f"the notebook test needs nbclient and ipykernel (pip install -e '.[dev]'): {e}")
    spec = importlib.util.spec_from_file_location("render_notebook", ROOT / "scripts" / "render_notebook.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    nb = render.execute_notebook(NOTEBOOK, tmp_path / "cache", tmp_path / "work", timeout_s=300)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "funnel:" in text and "CorticalColumn(spec='slab'" in text and "loss " in text
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
