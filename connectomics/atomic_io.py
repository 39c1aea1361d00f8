"""Atomic file writing and file checksums: a file is either complete under its name or absent.

Each writer writes to a temporary file beside the target (same folder, so same file system),
fsyncs it and renames it onto the target (:func:`os.replace`, atomic on POSIX and Windows), so
a reader never sees half a file and a crash leaves at most a hidden ``.<name>.*.tmp`` behind.
A folder whose files belong together (a graph) is written the same way as a whole
(:func:`atomic_dir`). Neutral on purpose: used by the Parquet cache, the graph files, the
FER-2013 decode cache and the training runs alike.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator

#: Tries of :func:`atomic_dir` to put its folder in place while other writers replace it.
_SWAP_ATTEMPTS = 100

__all__ = ["atomic_dir", "atomic_path", "atomic_write", "write_bytes_atomic", "write_json_atomic", "sha256_of"]


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    The caller writes (and closes) the temporary file inside the block; on an exception the
    temporary file is removed and ``target`` is left as it was. Parent folders are created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _usual_mode(tmp_path, 0o666)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _usual_mode(path: Path, mode: int) -> None:
    """Give ``path`` the permissions ``mode`` less the umask (mkstemp/mkdtemp make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``; on success it takes ``target``'s place.

    The caller writes every file into the yielded folder inside the block. On an exception the
    folder is removed and ``target`` is left as it was; on success an existing ``target`` is moved
    aside, the new folder renamed onto its name, and the old one removed. No reader ever sees a
    mix of old and new files; a crash between the two renames leaves ``target`` absent (its old
    contents in a hidden ``.<name>.*.old`` beside it), never half written. Writers of the same
    ``target`` at the same time (two processes building one graph) each put a complete folder
    there, the last one stays.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _usual_mode(tmp, 0o777)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        for _ in range(_SWAP_ATTEMPTS):
            old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
            with contextlib.suppress(FileNotFoundError):   # none there, or another writer moved it
                os.rename(target, old)
            try:
                os.rename(tmp, target)
            except OSError as e:   # another writer put its folder there in between: again
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue
            finally:
                shutil.rmtree(old, ignore_errors=True)
            break
        else:
            raise FileExistsError(f"{target}: other writers kept replacing it; {_SWAP_ATTEMPTS} attempts")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(target: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(binary file object)`` on a temporary file, then rename it onto ``target``."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        write(f)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (``str`` for what JSON lacks) atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
