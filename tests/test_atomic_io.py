"""connectomics.atomic_io: a written file is complete or absent; checksums."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from connectomics.atomic_io import atomic_path, atomic_write, sha256_of, write_bytes_atomic, write_json_atomic


def test_writers_round_trip_with_the_usual_mode(tmp_path):
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01payload")
    write_json_atomic(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    atomic_write(tmp_path / "d.bin", lambda f: f.write(b"streamed"))
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01payload"
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": [1, 2], "b": 1}
    assert (tmp_path / "d.bin").read_bytes() == b"streamed"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "d.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"old": True})

    def half(f):
        f.write(b'{"new": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "y.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_sha256_of_reads_in_chunks(tmp_path):
    data = os.urandom(3000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f", chunk=1024) == hashlib.sha256(data).hexdigest()


def test_atomic_dir_with_writers_and_readers_at_the_same_time(tmp_path):
    """Threads replacing one folder at once (as two runs building one default graph do): every
    replacement succeeds, a reader finds the files of one writer together, never a mix."""
    import threading

    from connectomics.atomic_io import atomic_dir

    target = tmp_path / "graph"
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(40):
                with atomic_dir(target) as tmp:
                    (tmp / "a").write_text(f"{k}-{i}")
                    (tmp / "b").write_text(f"{k}-{i}")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def reader() -> None:
        while not stop.is_set():
            try:
                a, b, again = (target / "a").read_text(), (target / "b").read_text(), (target / "a").read_text()
            except FileNotFoundError:
                continue   # between a swap's two renames, or before the first
            if a != b and again == a:   # a mix, not a swap between the reads (every write is unique)
                errors.append(AssertionError(f"mixed folder: {a} / {b}"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    read = threading.Thread(target=reader)
    read.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    read.join()
    assert not errors, errors[:3]
    assert (target / "a").read_text() == (target / "b").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph"]
