"""Plain helpers of the tests (builders of small graphs, data, configs; figure readers), imported
as ``from tests.helpers import ...``; the fixtures that use them are in ``conftest.py``.
``../shared`` (beside the checkout) holds real data: :func:`shared_path` skips a test, saying so,
where it is absent. Features never depend on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (real data lives in ../shared beside the checkout)")
    return p


# -- figure helpers (tests of connectomics.plots, graphnet.plots, pipelines.plots) -------------------
def images(fig) -> list:
    """Every ``AxesImage`` of a matplotlib figure, axes in order."""
    return [im for ax in fig.axes for im in ax.get_images()]


def image_data(im) -> np.ndarray:
    """An image's data as floats, masked entries NaN."""
    return np.ma.filled(np.ma.asarray(im.get_array(), dtype=float), np.nan)


def lines_with_gid(ax, gid: str) -> list:
    """The lines of ``ax`` tagged with ``gid``."""
    return [l for l in ax.get_lines() if l.get_gid() == gid]


# -- training helpers (tests of pipelines: train, evaluate, data parallel, models) ----------------
#: a small (cell type, layer) -> cells column: every layer of ColumnSpec.bionic() plus inhibitory cells
SMALL = {("4P", "L4"): 12, ("23P", "L2/3"): 10, ("5P-IT", "L5"): 6, ("5P-ET", "L5"): 2,
         ("6P-IT", "L6"): 9, ("BC", "L4"): 3, ("MC", "L2/3"): 2}


def small_graph(seed: int = 0):
    """:func:`graphnet.testing.synthetic_graph` of :data:`SMALL` at connection probability 0.25."""
    from graphnet.testing import synthetic_graph

    return synthetic_graph(SMALL, p=0.25, seed=seed)


def synthetic_csv(path: Path, n_train=96, n_val=32, n_private=16, seed=0) -> Path:
    """A Kaggle-layout CSV whose classes differ in mean brightness (so a model can learn)."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage, n in (("Training", n_train), ("PublicTest", n_val), ("PrivateTest", n_private)):
        for i in range(n):
            lab = i % 7
            img = np.clip(rng.normal(40 + 25 * lab, 30, 2304), 0, 255).astype(np.uint8)
            rows.append(f"{lab},{' '.join(map(str, img))},{usage}")
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    return path


def tiny_cfg(env, out: str, **kw):
    """A seconds-long training :class:`~pipelines.config.Config` on ``env = (root, data csv,
    graph folder)``, writing to ``root/out``; ``kw`` override any field."""
    from dataclasses import replace

    from pipelines.config import Config

    root, data, graph_dir = env
    base = Config(data=str(data), cache_root=str(root / "cache"), graph=str(graph_dir),
                  out=str(root / out), epochs=3, batch_size=16, conv1_channels=4, conv2_channels=4,
                  feat_size=4, lateral_size=3, lr=3e-3, warmup_epochs=1, lr_schedule="cosine",
                  noise_std=0.1, hebbian_rate=1e-3, homeostasis=True, patience=0,
                  eval_batch_size=64, log_every=3, progress=False, preset="default", threads=1,
                  plots=False)
    return replace(base, **kw)


def load_checkpoint(p: Path) -> dict:
    """A checkpoint file's dict, tensors on the CPU (weights only)."""
    import torch

    return torch.load(p, map_location="cpu", weights_only=True)


def make_folder(root: Path, imgs, labels, names, fmt="PNG"):
    """An image-folder FER-2013 release under ``root``: ``train|test/<class>/<name>``."""
    from PIL import Image

    from pipelines.fer2013 import CLASSES

    for im, lab, name in zip(imgs, labels, names):
        split = "train" if name.startswith("Training") else "test"
        d = root / split / CLASSES[lab]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / name, format=fmt)


def states_equal(a: dict, b: dict) -> list[str]:
    """Names of the tensors that differ between two state dicts (same keys asserted)."""
    import torch

    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def make_train_env(root: Path) -> tuple[Path, Path, Path]:
    """``(root, data csv, graph folder)`` of a seconds-long training: :func:`synthetic_csv` and
    :func:`small_graph` written under ``root`` (the ``env`` that :func:`tiny_cfg` takes)."""
    data = synthetic_csv(root / "fer.csv")
    graph_dir = root / "graph"
    small_graph().save(graph_dir)
    return root, data, graph_dir


def assert_page_shows_notebook(page: Path, notebook: Path, render_command: str) -> str:
    """A rendered notebook page shows every non-empty code cell of ``notebook`` as it is now and
    no path of this machine; returns the page's text. ``render_command`` is named in the failure."""
    import json

    text = page.read_text(encoding="utf-8")
    for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        src = "".join(c["source"]).strip()
        if c["cell_type"] == "code" and src:
            assert src in text, (f"{notebook.name} changed since {page.name} was rendered: run "
                                 f"{render_command}\n{src[:200]}")
    assert str(Path(__file__).resolve().parents[1]) not in text and "/tmp/" not in text
    return text
