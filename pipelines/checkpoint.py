"""Checkpoint files: written atomically, read with ``weights_only=True``, unreadable ones named.

A checkpoint holds only tensors and plain types (``torch.load(..., weights_only=True)``). Every
checkpoint ``pipelines.train`` writes carries ``config`` (the run's :class:`Config` as a dict),
``column_spec`` (the resolved ``graphnet.ColumnSpec.to_dict()`` of a bionic model, else ``None``)
and ``graph_checksum`` (of the graph the column was compiled from, else ``""``). Checkpoints
written before these two keys existed still load (:func:`pipelines.models.build_model` then
rebuilds the spec from the config, as those runs did).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from connectomics.cache import atomic_path

from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


def save_checkpoint(path: str | Path, obj: dict[str, Any]) -> None:
    """``torch.save(obj)`` to a temporary file beside ``path``, then rename."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` on the CPU, or :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- truncated zip, bad pickle, foreign file ...
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: not a pipelines.train checkpoint (no 'model' entry)")
    return obj
