"""A training run's checkpoints: what they hold, how they are written and read, and loading a
run's model from one. The one module that makes or reads ``last.pt``, ``best.pt`` and ``final.pt``.

A checkpoint holds only tensors and plain types (read with ``torch.load(..., weights_only=True)``;
a file that asks for any other Python object is refused as unsafe, never loaded). What
:func:`make_checkpoint` puts in a full checkpoint (``last.pt``, ``final.pt``)::

    model, optimizer      state dicts
    state                 pipelines.train.TrainState as a dict: epoch, step, best, history, finished
    schedule              pipelines.optim.LRSchedule.state_dict()
    rng                   shuffle and augment generator states, the CPU (and CUDA) RNG state of every rank
    config                the run's Config.to_dict()
    world_size, threads   the data-parallel ranks and CPU threads it ran with
    column_spec           the resolved graphnet.ColumnSpec.to_dict() of a bionic model, else None
    graph_checksum        ConnectomeGraph.checksum() of the graph the column was compiled from, else ""
    graph                 that graph's source, datastack, version, population query (and its key) and
                          checksum (:func:`graph_record`), {} for the plain CNN

``best.pt`` is :func:`best_subset`: the weights, the epoch, the selection metric, and the config,
spec and checksum that say how to rebuild the model. Checkpoints without ``column_spec`` /
``graph_checksum`` / ``schedule`` / ``threads`` load too: the spec is then rebuilt from the config,
and the graph cannot be checked.

:func:`load_run` is how a run's model is loaded, for ``evaluate`` and for ``train --resume``
alike: it always checks the checkpoint's graph checksum against the graph it compiles the column
from.
"""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from connectomics.atomic_io import atomic_path

from .config import Config
from .errors import UserError
from .models import build_model, column_spec_of
from .run_dir import RunDir


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated, unsafe, not a checkpoint, or does not fit its run."""


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """Serialise ``obj`` (in memory), then write it to a temporary file beside ``path`` and rename
    it into place: a failed write (a full disk) leaves the previous file as it was and raises
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(buf.getbuffer())
    except OSError as exc:
        reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"{path}: could not write the checkpoint ({reason}); {kept}") from None


def _torch_reason(exc: BaseException) -> str:
    """What torch says is wrong with a file, without its advice on ``weights_only``."""
    skip = ("weights only load failed", "weights_only", "please file an issue", "check the documentation")
    for line in str(exc).splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        if line and not any(s in line.lower() for s in skip):
            return line
    return type(exc).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` on the CPU, or :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated zip, bad pickle, foreign file ...
        unsafe = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"{path}: refused as unsafe: it asks to load the Python object "
                f"{(unsafe.group(1) or unsafe.group(2)).rstrip('.')}, and loading that could run code; "
                "a checkpoint holds only tensors and plain types") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{_torch_reason(exc)})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: not a pipelines.train checkpoint (no 'model' entry)")
    return obj


# ------------------------------------------------------------------------------------------------
# making checkpoints
# ------------------------------------------------------------------------------------------------
def graph_checksum(graph: Any) -> str:
    """:meth:`connectomics.graph.ConnectomeGraph.checksum`, ``""`` without a graph (plain CNN)."""
    return "" if graph is None else graph.checksum()


def graph_record(graph: Any) -> dict[str, Any]:
    """What a checkpoint names of the graph it was trained on: source, datastack, version, the
    population query and its key (None where the graph came from no query) and the checksum;
    ``{}`` without a graph (plain CNN)."""
    if graph is None:
        return {}
    meta = graph.meta
    return {"source": meta.get("source"), "datastack": meta.get("datastack"), "version": meta.get("version"),
            "query": meta.get("query"), "query_key": meta.get("query_key"), "checksum": graph.checksum()}


def make_checkpoint(*, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                    schedule: dict[str, Any], rng: dict[str, Any], cfg: Config, world_size: int,
                    graph_checksum: str, graph: dict[str, Any] | None = None) -> dict[str, Any]:
    """A full checkpoint (module doc): everything a resumed run needs to continue bit for bit."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
        "schedule": schedule, "rng": rng, "config": cfg.to_dict(), "world_size": world_size,
        "threads": torch.get_num_threads(), "column_spec": column_spec_of(model),
        "graph_checksum": graph_checksum, "graph": dict(graph or {}),
    }


def best_subset(checkpoint: dict[str, Any], epoch: int, metric: float) -> dict[str, Any]:
    """What ``best.pt`` keeps of a full checkpoint: the weights and how to rebuild the model, with
    the epoch and its selection metric."""
    return {"model": checkpoint["model"], "epoch": epoch, "metric": float(metric),
            "config": checkpoint["config"], "column_spec": checkpoint["column_spec"],
            "graph_checksum": checkpoint["graph_checksum"], "graph": checkpoint.get("graph", {})}


# ------------------------------------------------------------------------------------------------
# loading a run
# ------------------------------------------------------------------------------------------------
def load_run_graph(run: RunDir, cfg: Config, checksum: str = "", checkpoint_path: Path | None = None) -> Any:
    """The graph saved in a run folder; with ``checksum`` (a checkpoint's ``graph_checksum``) it
    must be the graph that checkpoint was trained on."""
    from connectomics import load_graph

    if not run.has_graph():
        raise FileNotFoundError(f"{run.graph}: the run's graph is missing (model {cfg.model} needs it)")
    graph = load_graph(run.graph)
    found = graph.checksum()
    if checksum and found != checksum:
        what = checkpoint_path or "the checkpoint"
        raise CheckpointError(f"{what}: trained on the graph with checksum {checksum[:12]}, but "
                              f"{run.graph} has graph checksum {found[:12]} (a checkpoint of another "
                              "run, or the run's graph was changed)")
    return graph


def load_run(run: str | Path, which: str | Path = "best", device: str | torch.device = "cpu", *,
             cfg: Config | None = None) -> tuple[nn.Module, Config, dict[str, Any]]:
    """(model with the checkpoint's weights on ``device``, config, checkpoint) of a run folder.

    ``which``: ``best`` | ``final`` | ``last`` or a checkpoint file. The column is compiled from
    the run's ``graph/``, which must have the checkpoint's graph checksum, with the checkpoint's
    resolved spec (from the config for checkpoints without one). ``cfg``: the config to build the
    model from (default: the run's ``config.json``; ``train --resume`` passes its overrides). The
    returned checkpoint's ``graph_checksum`` is that of the graph used (filled in for checkpoints
    without one)."""
    rd = RunDir(run)
    if cfg is None:
        if not rd.config.is_file():
            raise FileNotFoundError(f"--run {run}: not a training run ({rd.config} is missing)")
        cfg = Config.load(rd.config)
    path = rd.checkpoint(which)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (run finished? try --checkpoint last)")
    checkpoint = load_checkpoint(path)
    graph = None
    if cfg.model == "bionic":
        graph = load_run_graph(rd, cfg, checkpoint.get("graph_checksum", ""), path)
    checkpoint["graph_checksum"] = graph_checksum(graph)
    model = build_model(cfg, graph, device=device, spec=checkpoint.get("column_spec"))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: its weights do not fit the model of {rd.root} ({first})") from None
    return model, cfg, checkpoint

