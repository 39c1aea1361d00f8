"""notebooks/explore_graph.ipynb: committed without outputs; runs top to bottom on the default
source (the bundled real MICrONS column) into a temporary cache, in a kernel of *this* interpreter
importing *this* checkout, in under 2 minutes; its rendered page docs/explore_graph.md
(``scripts/render_notebook.py``) shows the notebook as it is now.

Needs nbclient, nbformat and ipykernel (in the ``dev`` extra). The kernel is a throwaway
kernelspec pointing at ``sys.executable``, found through ``JUPYTER_PATH``, so whatever ``python3``
kernels the machine has installed (another venv, a system Jupyter) are never used.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest

from tests.helpers import assert_page_shows_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_graph.ipynb"
PAGE = ROOT / "docs" / "explore_graph.md"
BUDGET_S = 120.0


def _render_script():
    spec = importlib.util.spec_from_file_location("render_notebook", ROOT / "scripts" / "render_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]


def test_notebook_is_committed_without_outputs():
    cells = _cells()
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, "no code cells"
    for i, c in enumerate(code):
        assert c.get("outputs") == [], f"code cell {i} has outputs: clear them before committing"
        assert c.get("execution_count") is None, f"code cell {i} has an execution count"
    # the first code cell holds the parameters, overridable from the environment
    params = "".join(code[0]["source"])
    assert "parameters" in code[0].get("metadata", {}).get("tags", [])
    for name in ('CACHE = os.environ.get("BIONIC_CACHE", "data_cache")',
                 'SOURCE = os.environ.get("BIONIC_SOURCE", "column")'):
        assert name in params
    # it says the default is the real column, and that the surrogate is not MICrONS synapses
    text = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "the real MICrONS V1 column" in text and "(not MICrONS synapses)" in text


def test_rendered_page_shows_the_notebook_as_it_is():
    """docs/explore_graph.md is the notebook rendered: every code cell as it is now, every figure
    it links present (and no figure it does not link), nothing of this machine's paths."""
    page = assert_page_shows_notebook(PAGE, NOTEBOOK, "python scripts/render_notebook.py")
    linked = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", page)
    assert len(linked) >= 10
    for rel in linked:
        assert (PAGE.parent / rel).is_file(), rel
    folder = PAGE.parent / "figures" / NOTEBOOK.stem
    assert {p.relative_to(PAGE.parent).as_posix() for p in folder.glob("*.png")} == set(linked)
    assert "4P|L2/3 (55), 4P|L4 (211)" in page                # the compiled column's summary
    assert sum(p.stat().st_size for p in folder.glob("*.png")) < 1_500_000   # small images


def test_notebook_runs_top_to_bottom(tmp_path):
    try:
        import ipykernel  # noqa: F401
        import nbformat  # noqa: F401
        from nbclient.exceptions import CellExecutionError
    except ImportError as e:  # fail, not skip: CI must run the notebook
        pytest.fail(f"the notebook test needs nbclient, nbformat and ipykernel "
                    f"(pip install -e '.[dev]'): {e}")

    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    try:
        nb = _render_script().execute_notebook(NOTEBOOK, cache, tmp_path / "work", timeout_s=int(BUDGET_S))
    except CellExecutionError as e:
        pytest.fail(f"a notebook cell failed:\n{e}", pytrace=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < BUDGET_S, f"notebook took {elapsed:.0f} s (budget {BUDGET_S:.0f} s)"

    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    # the kernel was this interpreter, the graph was built into the temporary cache
    assert f"cache: {cache}" in text
    assert "cells: 1351  (1188 E, 163 I)" in text
    assert "real MICrONS synapse counts" in text          # the column's meta note
    (graph_dir,) = cache.glob("v1_column-*/v1/graph")
    assert (cache / "surrogate" / "v0" / "graph" / "nodes.parquet").exists()   # built for the comparison
    assert (graph_dir / "nodes.parquet").exists()
    assert (graph_dir / "exports" / "type_graph.graphml").stat().st_size > 0
    assert (graph_dir / "exports" / "neurons.graphml").stat().st_size > 0
    # every plot cell drew a figure (PNG), not a bare "<Figure ...>" repr
    figure_calls = ("plots.", "mask_images(")
    plot_cells = [c for c in code if c.source.strip() and c.source.strip().splitlines()[-1].startswith(figure_calls)]
    assert len(plot_cells) >= 10
    for c in plot_cells:
        assert any("image/png" in o.get("data", {}) for o in c.outputs), c.source
    assert "CorticalColumn(" in text  # print(column), each population once
    assert "4P|L2/3 (55), 4P|L4 (211)" in text
    # the real column beside the surrogate: a figure; Neuroglancer: one link per layer A-D
    (cmp_cell,) = [c for c in code if "compare_graphs(pair" in c.source]
    assert any("image/png" in o.get("data", {}) for o in cmp_cell.outputs)
    (ng_cell,) = [c for c in code if "neuroglancer_state(" in c.source]
    html = "".join(o.get("data", {}).get("text/html", "") for o in ng_cell.outputs)
    assert html.count("<a href=") == 4 and all(f"layer {x}:" in html for x in "ABCD")
