"""notebooks/explore_graph.ipynb: committed without outputs; runs top to bottom on the default
source (the bundled real MICrONS column) into a temporary cache, in a kernel of *this* interpreter, in under 2 minutes.

Needs nbclient, nbformat and ipykernel (in the ``dev`` extra). The kernel is a throwaway
kernelspec pointing at ``sys.executable``, found through ``JUPYTER_PATH``, so whatever ``python3``
kernels the machine has installed (another venv, a system Jupyter) are never used.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_graph.ipynb"
BUDGET_S = 120.0


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


def _kernel_for_this_interpreter(root: Path) -> str:
    name = "bionic-test-" + Path(sys.prefix).name.replace(" ", "_")
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})", "language": "python",
        "metadata": {"debugger": False},
    }))
    return name


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    try:
        import ipykernel  # noqa: F401
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as e:  # fail, not skip: CI must run the notebook
        pytest.fail(f"the notebook test needs nbclient, nbformat and ipykernel "
                    f"(pip install -e '.[dev]'): {e}")

    jupyter = tmp_path / "jupyter"
    kernel = _kernel_for_this_interpreter(jupyter)
    cache = tmp_path / "cache"
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile / startup files
    monkeypatch.setenv("BIONIC_CACHE", str(cache))
    monkeypatch.delenv("BIONIC_SOURCE", raising=False)   # the default: the real column
    monkeypatch.delenv("MPLBACKEND", raising=False)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel, timeout=int(BUDGET_S), startup_timeout=60,
                            allow_errors=False, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
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
    assert "CorticalColumn(" in text  # print(column)
    # the real column beside the surrogate: a figure; Neuroglancer: one link per layer A-D
    (cmp_cell,) = [c for c in code if "compare_graphs(pair)" in c.source]
    assert any("image/png" in o.get("data", {}) for o in cmp_cell.outputs)
    (ng_cell,) = [c for c in code if "neuroglancer_state(" in c.source]
    html = "".join(o.get("data", {}).get("text/html", "") for o in ng_cell.outputs)
    assert html.count("<a href=") == 4 and all(f"layer {x}:" in html for x in "ABCD")
