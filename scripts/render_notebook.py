"""Render a notebook (default ``notebooks/explore_graph.ipynb``) to a page in ``docs/``, so a
reader sees its output (tables, figures, the compiled column) on GitHub without running anything.

    python scripts/render_notebook.py [--notebook PATH] [--out docs/explore_graph.md] [--cache DIR] [--dpi 85]

The committed notebook keeps no outputs. This script executes a copy of it top to bottom (nbclient,
in a kernel of this interpreter, on the default source: the bundled real MICrONS column) and writes
it as markdown with nbconvert, its figures as PNGs in ``docs/figures/<notebook name>/`` (the folder
is emptied first, so no figure of an earlier render stays). Absolute paths of this checkout in the
printed output are written relative to it. Figures whose own resolution is not fixed are drawn at
``--dpi``; the mask figure keeps its own, about one pixel per unit. Run it again whenever the
notebook or a figure changes: ``tests/test_notebook.py`` and ``tests/test_population_notebook.py``
check that each page shows every code cell of its notebook as it is now. The population notebook:

    python scripts/render_notebook.py --notebook notebooks/population_query.ipynb --out docs/population_query.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_graph.ipynb"
PAGE = ROOT / "docs" / "explore_graph.md"
TIMEOUT_S = 600
HTML_LIMIT = 20_000   # bytes: a longer HTML output is left out of the page


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (``None``: remove) environment variables for the duration, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _kernel_for_this_interpreter(jupyter_dir: Path) -> str:
    """A throwaway kernelspec running ``sys.executable``, so whatever ``python3`` kernels the
    machine has (another venv, a system Jupyter) are never used."""
    name = "bionic-" + Path(sys.prefix).name.replace(" ", "_")
    spec = jupyter_dir / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})", "language": "python",
        "metadata": {"debugger": False},
    }))
    return name


def execute_notebook(path: Path, cache: Path, work: Path, timeout_s: int = TIMEOUT_S,
                     figure_dpi: float | None = None):
    """Run the notebook at ``path`` top to bottom with ``BIONIC_CACHE=cache`` and the default
    source, importing this checkout's packages (not another installed copy); ``work`` holds the
    kernelspec and an empty IPython profile (no user startup files). ``figure_dpi`` sets
    matplotlib's default resolution in the kernel. Returns the executed ``nbformat`` notebook; a
    failing cell raises ``nbclient``'s ``CellExecutionError``."""
    import nbformat
    from nbclient import NotebookClient

    kernel = _kernel_for_this_interpreter(work / "jupyter")
    profile = work / "ipython" / "profile_default"
    profile.mkdir(parents=True, exist_ok=True)
    if figure_dpi is not None:
        (profile / "ipython_kernel_config.py").write_text(
            f"c.InlineBackend.rc = {{'figure.dpi': {float(figure_dpi)!r}}}\n")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout_s, startup_timeout=60,
                            allow_errors=False, resources={"metadata": {"path": str(path.parent)}})
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with _environment(PYTHONPATH=python_path, JUPYTER_PATH=str(work / "jupyter"), JUPYTER_PLATFORM_DIRS="1",
                      IPYTHONDIR=str(work / "ipython"), BIONIC_CACHE=str(cache), BIONIC_SOURCE=None,
                      MPLBACKEND=None):
        client.execute()
    return nb


def _relative_paths(nb, root: Path) -> None:
    """Write this checkout's absolute paths in the printed outputs relative to it."""
    prefix = str(root)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(prefix + os.sep, "").replace(prefix, ".")
            data = out.get("data", {})
            for kind in ("text/plain", "text/html"):
                if kind in data:
                    data[kind] = data[kind].replace(prefix + os.sep, "").replace(prefix, ".")


def _leave_out_long_html(nb, limit_bytes: int = HTML_LIMIT) -> None:
    """Replace an HTML output longer than ``limit_bytes`` (the Neuroglancer links carry each
    viewer's whole state: about 100 kB a link) by one sentence saying what it was."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html", "")
            if len(html) > limit_bytes:
                links = html.count("<a href=")
                what = f"{links} links" if links else "an HTML output"
                out["data"] = {"text/markdown": (
                    f"*[{what}, {len(html) / 1e3:.0f} kB of HTML, left out of this page: "
                    "run the notebook to get them]*")}


def _small_png(data: bytes) -> bytes:
    """The PNG with its colours reduced to a 256-colour palette (figures have few colours; about
    a third of the bytes)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                         dither=Image.Dither.NONE)
    buf = io.BytesIO()
    pal.save(buf, format="png", optimize=True)
    return buf.getvalue()


def to_markdown(nb, page: Path, notebook: Path) -> list[Path]:
    """Write the executed notebook as ``page`` and its figures under
    ``<page folder>/figures/<notebook name>/``; returns the figures written."""
    from nbconvert import MarkdownExporter

    name = notebook.stem
    figures_rel = f"figures/{name}"
    body, resources = MarkdownExporter().from_notebook_node(
        nb, resources={"output_files_dir": figures_rel, "unique_key": name})
    # pandas' notebook tables carry a <style> block that GitHub shows as text
    body = re.sub(r"<style scoped>.*?</style>\s*", "", body, flags=re.S)
    source = notebook.resolve().relative_to(ROOT) if notebook.resolve().is_relative_to(ROOT) else notebook
    command = "python scripts/render_notebook.py"
    if notebook.resolve() != NOTEBOOK:
        out = page.resolve().relative_to(ROOT) if page.resolve().is_relative_to(ROOT) else page
        command += f" --notebook {source} --out {out}"
    header = (f"<!-- Generated by scripts/render_notebook.py from {source}: edit the notebook and "
              "render again, not this page. -->\n\n"
              f"*The notebook [`{source}`](../{source}) as it ran top to bottom, its own defaults "
              f"unchanged, rendered by `{command}`.*\n\n")
    folder = page.parent / figures_rel
    if folder.exists():
        shutil.rmtree(folder)
    if resources.get("outputs"):
        folder.mkdir(parents=True)
    written = []
    for rel, data in resources.get("outputs", {}).items():
        target = page.parent / rel
        target.write_bytes(_small_png(data) if target.suffix == ".png" else data)
        written.append(target)
    page.write_text(header + body.strip() + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebook", type=Path, default=NOTEBOOK)
    ap.add_argument("--out", type=Path, default=PAGE, help="the markdown page (figures beside it)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache root for the graphs (default: a temporary one, built from the bundled column)")
    ap.add_argument("--dpi", type=float, default=85.0,
                    help="resolution of figures that do not fix their own (85: a page's width for the widest)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="render-notebook-") as tmp:
        work = Path(tmp)
        cache = args.cache.resolve() if args.cache else work / "cache"
        nb = execute_notebook(args.notebook.resolve(), cache, work, figure_dpi=args.dpi)
        _relative_paths(nb, ROOT)
        _leave_out_long_html(nb)
        if args.cache is None:  # the temporary cache's paths mean nothing on the page
            for cell in nb.cells:
                for out in cell.get("outputs", []):
                    if "text" in out:
                        out["text"] = out["text"].replace(str(cache), "data_cache")
        figures = to_markdown(nb, args.out.resolve(), args.notebook)
    size = sum(f.stat().st_size for f in figures)
    print(f"{args.out}: {len(figures)} figures, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
