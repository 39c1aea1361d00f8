"""Data flows one way: connectomics -> graphnet -> pipelines. connectomics imports neither
graphnet nor pipelines, graphnet never imports pipelines, not even lazily inside a function.
Inside pipelines each job has one room: checkpoint files are written and read only by
pipelines/checkpoint.py, torch.distributed is used only by pipelines/distributed.py. Inside
graphnet every module is a planning, a module-building or a shared one; inside connectomics the
sources come before the build. README's layout names every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"connectomics": ("graphnet", "pipelines"), "graphnet": ("pipelines",)}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a source file imports anywhere (module level or in a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_import_scan_finds_imports_in_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\ndef f():\n    from pipelines.plots import x\n    import graphnet.plots\n")
    assert imported_modules(f) == {"os", "pipelines.plots", "graphnet.plots"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_file_imports_a_higher_layer(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 5
    bad = [f"{f.relative_to(ROOT)} imports {m}" for f in files for m in sorted(imported_modules(f))
           if m.split(".")[0] in FORBIDDEN[package]]
    assert not bad, bad


def test_importing_every_connectomics_module_loads_neither_graphnet_nor_pipelines():
    """A fresh interpreter imports each connectomics module and checks sys.modules (graphnet's
    own modules are covered by the source scan above: importing them needs torch, ~10 s)."""
    mods = sorted(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for f in (ROOT / "connectomics").rglob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('graphnet', 'pipelines'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


#: Within graphnet the compiler flows one way too: specs and null models -> plans -> modules.
#: A plan is what the graph says before any module exists, so the planning modules import none
#: of the module-building ones.
PLANNING = ("spec", "null_models", "plan")
MODULE_BUILDING = ("backend", "column", "count_linear", "masked_linear", "memory_capacity", "plasticity",
                   "plots", "population_norm", "projection", "recurrent", "reservoir", "sparse_linear")
#: Neither: the inhibitory input a plan records and the GradedInhibition module built from it (one
#: concept), the spectral radius (numbers of any matrix), synthetic graphs for tests and benchmarks.
SHARED = ("__init__", "inhibition", "spectral", "testing")


def test_every_graphnet_module_has_its_room():
    modules = {p.stem for p in (ROOT / "graphnet").glob("*.py")}
    assert modules == set(PLANNING) | set(MODULE_BUILDING) | set(SHARED)


def test_the_readme_layout_names_every_module():
    """README's layout lists each module of connectomics, graphnet and pipelines on a line that
    starts with its package's folder (``graphnet/column.py  ...; recurrent.py ...``), and each
    subpackage of connectomics as a line of its own (``connectomics/sources/``)."""
    import re

    named: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"(connectomics|graphnet|pipelines)/(\w+/)?", line)
        if m:
            named.add(m.group(0).rstrip("/"))
            named |= {f"{m.group(1)}/{name}" for name in re.findall(r"\b(\w+\.py)\b", line)}
    modules = {str(p.relative_to(ROOT)) for pkg in ("connectomics", "graphnet", "pipelines")
               for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"}
    subpackages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "connectomics").glob("*/__init__.py")}
    missing = sorted((modules | subpackages) - named)
    assert not missing, f"README's layout does not name {missing}"


@pytest.mark.parametrize("name", PLANNING)
def test_graphnet_planning_modules_import_no_module_building_code(name):
    path = ROOT / "graphnet" / f"{name}.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    absolute = {m.split(".")[1] for m in imported_modules(path) if m.startswith("graphnet.")}
    assert not (relative | absolute) & set(MODULE_BUILDING), (name, relative | absolute)


def test_the_conv_front_end_lives_in_pipelines():
    """graphnet compiles graphs; the conv front end (lateral inhibition, CBAM, pooling) is the
    training pipeline's and is not part of graphnet."""
    import graphnet

    assert not {"LateralInhibition2d", "FastLateralInhibition2d", "CBAM"} & set(dir(graphnet))
    assert "class LateralInhibition2d" not in (ROOT / "graphnet" / "inhibition.py").read_text()
    assert "class LateralInhibition2d" in (ROOT / "pipelines" / "frontend.py").read_text()


def _calls(path: Path) -> set[str]:
    """Dotted names called in a source file (``torch.save(...)`` -> ``torch.save``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                out.add(".".join([f.id, *reversed(parts)]))
    return out


def test_scans_find_calls_and_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch.distributed as dist\ndef f(x):\n    torch.save(x, 'p')\n    dist.barrier()\n")
    assert {"torch.save", "dist.barrier"} <= _calls(f) and "torch.distributed" in imported_modules(f)


@pytest.mark.parametrize("owner, imports, calls", [
    ("checkpoint.py", (), ("torch.save", "torch.load")),
    ("distributed.py", ("torch.distributed",), ()),
])
def test_one_module_of_pipelines_owns_checkpoint_files_and_collectives(owner, imports, calls):
    files = sorted((ROOT / "pipelines").rglob("*.py"))
    users = {f.name for f in files
             if any(m in imported_modules(f) for m in imports) or set(calls) & _calls(f)}
    assert users == {owner}, users


def _connectomics_imports(path: Path) -> set[str]:
    """The connectomics modules ``path`` imports, as dotted names below ``connectomics``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT / "connectomics").parent.parts
    names = {m.removeprefix("connectomics.") for m in imported_modules(path) if m.startswith("connectomics.")}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level + 1])
            names |= {".".join(base + ([node.module] if node.module else []) + ([] if node.module else [a.name]))
                      for a in node.names}
    return names


def test_connectomics_sources_come_before_the_build():
    """Within connectomics tables flow one way too: a source (connectomics/sources/, made by name
    from connectomics.sources.SOURCES) delivers tables and knows nothing of the build that turns
    them into graphs; the synapse sampler draws synapses for any cells and knows no source."""
    sources = sorted((ROOT / "connectomics" / "sources").glob("*.py"))
    assert {p.stem for p in sources} >= {"__init__", "base", "column", "surrogate", "cave", "snapshot", "volume"}
    bad = [f"{p.relative_to(ROOT)} imports connectomics.{m}" for p in sources
           for m in sorted(_connectomics_imports(p)) if m.split(".")[0] in ("build", "dask_engine")]
    assert not bad, bad
    sampler = _connectomics_imports(ROOT / "connectomics" / "synapse_sampler.py")
    assert sampler and not [m for m in sampler if m.startswith("sources")], sampler
    assert not (ROOT / "connectomics" / "volume.py").exists()
