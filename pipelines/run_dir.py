"""The layout of a training run's folder, and its lock. The one place that names these files.

    <run>/config.json              the resolved Config (what --resume restores)
    <run>/graph/                   the graph the column was compiled from (bionic model)
    <run>/metrics.csv, metrics.json  one row per epoch (+ the run summary in the JSON)
    <run>/curves.png               training curves
    <run>/last.pt                  written atomically after every epoch: what --resume reads
    <run>/best.pt                  the best epoch on the validation usage (weights only)
    <run>/final.pt                 the last epoch of a finished run
    <run>/eval_<usage>.json        evaluation reports (best.pt; eval_<usage>_final.json: final.pt);
                                   confusion_<usage>.png their figures
    <run>/predictions.npz          per-image predictions of best.pt and final.pt (pipelines.predictions)
    <run>/train.log                the output of a run started by pipelines.experiments
    <run>/.lock                    held (flock) by the process training into the folder

The lock is an exclusive ``fcntl.flock`` on ``.lock``: the kernel drops it when the process
ends, however it ends, so a killed run never leaves a stale lock. The file holds the holder's pid
and host for the message a second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import UserError

CHECKPOINTS = ("best", "final", "last")


class RunLockedError(UserError):
    """Another process is training into the run folder."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder (nothing is created by constructing it)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def graph(self) -> Path:
        return self.root / "graph"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def final(self) -> Path:
        return self.root / "final.pt"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def checkpoint(self, name: str | Path) -> Path:
        """``best`` / ``final`` / ``last`` -> that file of the run; anything else is a path."""
        return self.root / f"{name}.pt" if str(name) in CHECKPOINTS else Path(name)

    def eval_json(self, usage: str) -> Path:
        return self.root / f"eval_{usage}.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.npz"

    def confusion_png(self, usage: str) -> Path:
        return self.root / f"confusion_{usage}.png"

    def has_graph(self) -> bool:
        return (self.graph / "nodes.parquet").exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's exclusive lock (creating the folder) or raise
        :class:`RunLockedError` at once, naming the holder. A folder this call created and that
        holds nothing but the lock when the run ends (it failed before writing anything) is
        removed again, so a failed start leaves no empty run behind."""
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        held = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise RunLockedError(f"{self.root} is in use by {holder} (another training writes "
                                     f"there); wait for it or choose another --out") from None
            held = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
            yield
        finally:
            if held and created and [p.name for p in self.root.iterdir()] == [self.lock_file.name]:
                self.lock_file.unlink()
                self.root.rmdir()
            os.close(fd)   # closing the descriptor releases the flock
