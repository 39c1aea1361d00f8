"""FER-2013: read the Kaggle CSV or the image-folder release once, cache it as a uint8 array.

Sources
    * the Kaggle CSV (plain or gzip): header ``emotion,pixels,Usage`` (column order and spaces
      around the names do not matter; ``icml_face_data.csv`` works too); ``pixels`` holds 2304
      space-separated integers 0-255 (48x48 row-major); ``Usage`` is ``Training``,
      ``PublicTest`` or ``PrivateTest`` (any subset may be present);
    * the image-folder release: ``<root>/{train,test}/<class>/<Usage>_<id>.jpg`` with class folders
      ``angry disgust fear happy sad surprise neutral`` (-> 0..6) and the Usage taken from the file
      name prefix (``Training_``, ``PublicTest_``, ``PrivateTest_``; a file under ``train/``
      without a prefix is ``Training``). Decoded with Pillow (greyscale, must be 48x48). Images are
      ordered by Usage, then numeric file id, then path -- the row order of the re-packed
      ``fer2013.csv.gz`` of ``../shared/data/fer2013``.

Cache
    ``<cache_root>/fer2013/<sha256[:16]>.npz`` with ``images`` (N, 48, 48) uint8, ``labels`` (N,)
    uint8, ``usage`` (N,) uint8 (index into :data:`USAGES`) and the source's ``sha256``. The key
    is the sha256 of the CSV file (for an image folder: of its sorted listing of relative path,
    size and mtime of every image). ``index.json`` beside it remembers the checksum of a source
    path for its (size, mtime), so a later load is stat + ``np.load`` (~0.1 s) instead of hashing
    and decoding (~2 s for the full CSV). Every file is written to a temporary name and renamed
    (:func:`os.replace`), so a crash never leaves half a cache; a decode error writes nothing.

Errors
    A malformed CSV row raises :class:`FER2013FormatError` naming the file, the 1-based *line* of
    the file (line 1 = the header) and the 0-based data *row*, and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from connectomics.atomic_io import atomic_write as _atomic_write
from connectomics.atomic_io import sha256_of

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
SIDE = 48
NPIX = SIDE * SIDE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff")
CACHE_VERSION = 1


class FER2013FormatError(ValueError):
    """The source is not valid FER-2013: the message names the file and the row/line."""


@dataclass
class FER2013:
    """The decoded dataset: images (N, 48, 48) uint8, labels (N,) 0..6, usage (N,) 0..2."""

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    source: str = ""
    sha256: str = ""
    cache_file: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def usages(self) -> tuple[str, ...]:
        """The Usage values present, in :data:`USAGES` order."""
        present = set(np.unique(self.usage).tolist())
        return tuple(u for i, u in enumerate(USAGES) if i in present)

    def indices(self, usage: str | Iterable[str]) -> np.ndarray:
        """Row indices of one Usage (or several)."""
        names = [usage] if isinstance(usage, str) else list(usage)
        codes = []
        for u in names:
            if u not in USAGES:
                raise ValueError(f"unknown Usage {u!r}; choose from {USAGES}")
            codes.append(USAGES.index(u))
        return np.flatnonzero(np.isin(self.usage, codes))

    def split(self, usage: str | Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one Usage; raises if it has no rows."""
        idx = self.indices(usage)
        if len(idx) == 0:
            raise ValueError(f"{self.source}: no {usage} rows (present: {', '.join(self.usages) or 'none'})")
        return self.images[idx], self.labels[idx]

    def counts(self) -> dict[str, list[int]]:
        """Per Usage present: images per class."""
        return {u: np.bincount(self.labels[self.usage == USAGES.index(u)], minlength=7).tolist()
                for u in self.usages}


# ------------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------------
def _where(path: Path, row: int) -> str:
    return f"{path}: line {row + 2} (data row {row}, 0-based; line 1 is the header)"


def _parse_pixel_block(data: np.ndarray, offs: np.ndarray) -> np.ndarray | None:
    """Parse ``len(offs) - 1`` concatenated pixel strings (``data[offs[i]:offs[i+1]]``, no
    separator between rows) into (n, 2304) uint8, fully vectorised. ``None`` if anything is off
    (a non-digit/non-space byte, a number over 3 digits or over 255, a row without exactly 2304
    numbers); the caller then locates the offending row with :func:`_check_pixel_row`."""
    n = len(offs) - 1
    c = data[offs[0]:offs[-1]]
    offs = offs - offs[0]
    if n == 0:
        return np.empty((0, NPIX), np.uint8)
    if (np.diff(offs) == 0).any():
        return None
    L = len(c)
    rs, re_ = offs[:-1], offs[1:] - 1
    d = c - np.uint8(48)                                  # digits -> 0..9, ' ' -> 240
    isd = d < 10
    if not (isd | (d == 240)).all():
        return None
    nxt = np.empty(L, bool)                               # next byte is a digit of the same row
    nxt[:-1] = isd[1:]
    nxt[-1] = False
    nxt[re_] = False
    e = np.flatnonzero(isd & ~nxt)                        # last digit of every number
    p1 = np.empty(L, bool)                                # previous byte is a digit of the same row
    p1[0] = False
    p1[1:] = isd[:-1]
    p1[rs] = False
    g1 = p1[e]
    em1 = e - 1
    g2 = p1[em1] & g1
    em2 = e - 2
    if (p1[em2] & g2).any():                              # 4+ digits
        return None
    v = d[e].astype(np.int16)
    v += (d[em1] * g1).astype(np.int16) * 10
    v += (d[em2] * g2).astype(np.int16) * 100
    if (np.diff(np.searchsorted(e, offs)) != NPIX).any() or (len(v) and v.max() > 255):
        return None
    return v.astype(np.uint8).reshape(n, NPIX)


def _check_pixel_row(text: str) -> str | None:
    """Why one pixel string is invalid (None if it is fine)."""
    toks = text.split()
    for j, t in enumerate(toks):
        if not t.isdigit() or not t.isascii():
            return f"pixel {j} is not a non-negative integer: {t[:20]!r}"
        if int(t) > 255:
            return f"pixel {j} = {t} is outside 0..255"
    if len(toks) != NPIX:
        return f"expected {NPIX} pixel values, got {len(toks)}"
    return None


def _fields_error(path: Path, exc: Exception) -> FER2013FormatError:
    """Turn a CSV structure error into one naming the line (found with the csv module)."""
    import csv
    import gzip

    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as f:
            rd = csv.reader(f)
            header = next(rd, None)
            n = len(header) if header else 0
            for i, row in enumerate(rd):
                if len(row) != n:
                    return FER2013FormatError(
                        f"{_where(path, i)}: expected {n} comma-separated fields, got {len(row)}")
    except Exception:  # noqa: BLE001 -- fall back to the parser's own message
        pass
    return FER2013FormatError(f"{path}: not a readable FER-2013 CSV: {exc}")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_csv(path: str | Path, block_size: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a Kaggle-layout FER-2013 CSV (plain or gzip) -> (images, labels, usage).

    Streams the file through pyarrow's CSV reader (decompression runs in its background thread)
    and parses each block's pixel strings with :func:`_parse_pixel_block`; ~2 s for the 32k-row
    file. Raises :class:`FER2013FormatError` naming the file and the row on any malformed row.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FER-2013 CSV")
    compression = "gzip" if _is_gzip(path) else None
    try:
        stream = pa.input_stream(str(path), compression=compression)
        header = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=1 << 16)).schema.names
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise _fields_error(path, exc) from None
    names = {h.strip().lower(): h for h in header}
    missing = [c for c in ("emotion", "pixels", "usage") if c not in names]
    if missing:
        raise FER2013FormatError(f"{path}: header {header} lacks column(s) {missing} "
                                 f"(expected emotion,pixels,Usage)")
    ecol, pcol, ucol = names["emotion"], names["pixels"], names["usage"]
    images, labels, usage = [], [], []
    row0 = 0
    try:   # opening reads the first block: a truncated/corrupt file fails here or in the loop
        reader = pcsv.open_csv(
            pa.input_stream(str(path), compression=compression),
            read_options=pcsv.ReadOptions(block_size=block_size),
            convert_options=pcsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                                strings_can_be_null=False),
        )
        for batch in reader:
            n = batch.num_rows
            # labels: exactly one of "0".."6" (surrounding spaces allowed)
            em = np.asarray(batch.column(ecol).to_pylist(), dtype=object)
            em_s = np.char.strip(em.astype(str))
            ok = np.isin(em_s, [str(k) for k in range(7)])
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                raise FER2013FormatError(
                    f"{_where(path, row0 + i)}: emotion {em[i]!r} is not a class index 0..6")
            us = np.char.strip(np.asarray(batch.column(ucol).to_pylist(), dtype=str))
            ok = np.isin(us, USAGES)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                raise FER2013FormatError(
                    f"{_where(path, row0 + i)}: Usage {str(us[i])!r} is not one of {', '.join(USAGES)}")
            pix = batch.column(pcol)
            bufs = pix.buffers()
            offs = np.frombuffer(bufs[1], dtype=np.int32)[pix.offset:pix.offset + n + 1].astype(np.int64)
            data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
            block = _parse_pixel_block(data, offs)
            if block is None:
                # slow path: find the first bad row; accept harmless formatting the strict fast
                # path refuses (doubled spaces, tabs, leading/trailing blanks)
                texts = pix.to_pylist()
                for i, t in enumerate(texts):
                    why = _check_pixel_row(t)
                    if why is not None:
                        raise FER2013FormatError(f"{_where(path, row0 + i)}: {why}")
                block = np.stack([np.array(t.split(), dtype=np.int64).astype(np.uint8) for t in texts])
            images.append(block.reshape(n, SIDE, SIDE))
            labels.append(em_s.astype(np.uint8))
            codes = np.zeros(n, np.uint8)
            for k, u in enumerate(USAGES):
                codes[us == u] = k
            usage.append(codes)
            row0 += n
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise _fields_error(path, exc) from None
    if row0 == 0:
        raise FER2013FormatError(f"{path}: no data rows")
    return np.concatenate(images), np.concatenate(labels), np.concatenate(usage)


# ------------------------------------------------------------------------------------------------
# image folders
# ------------------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_(\d+)?")


def _folder_listing(root: Path) -> list[tuple[int, int, str, int, Path]]:
    """(usage code, numeric id, relative path, label, path) of every image under ``root``."""
    out = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label_name = class_dir.name.lower()
            if label_name not in CLASSES:
                raise FER2013FormatError(
                    f"{class_dir}: unknown class folder {class_dir.name!r}; expected {', '.join(CLASSES)}")
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file():
                    continue
                m = _PREFIX.match(f.name)
                if m:
                    u = USAGES.index(m.group(1))
                    fid = int(m.group(2)) if m.group(2) else -1
                elif split_dir.name.lower() == "train":
                    u, fid = 0, -1
                else:
                    raise FER2013FormatError(
                        f"{f}: cannot tell its Usage: the file name has no Training_/PublicTest_/"
                        f"PrivateTest_ prefix")
                out.append((u, fid, f.relative_to(root).as_posix(), CLASSES.index(label_name), f))
    if not out:
        raise FER2013FormatError(f"{root}: no images found (expected {root}/train/<class>/*.jpg, "
                                 f"{root}/test/<class>/*.jpg)")
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return out


def read_image_folder(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the image-folder release (see module doc) -> (images, labels, usage)."""
    from PIL import Image

    root = Path(root)
    listing = _folder_listing(root)
    images = np.empty((len(listing), SIDE, SIDE), np.uint8)
    for i, (_, _, rel, _, f) in enumerate(listing):
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert("L"))
        except Exception as exc:  # noqa: BLE001
            raise FER2013FormatError(f"{f}: cannot decode image: {exc}") from None
        if a.shape != (SIDE, SIDE):
            raise FER2013FormatError(f"{f}: image is {a.shape[1]}x{a.shape[0]}, expected 48x48")
        images[i] = a
    labels = np.array([t[3] for t in listing], np.uint8)
    usage = np.array([t[0] for t in listing], np.uint8)
    return images, labels, usage


# ------------------------------------------------------------------------------------------------
# checksums and cache
# ------------------------------------------------------------------------------------------------
def _folder_fingerprint(root: Path) -> tuple[str, tuple]:
    """sha256 of the sorted (relative path, size, mtime_ns) of every image, and a stat key."""
    h = hashlib.sha256()
    n, newest = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            n += 1
            newest = max(newest, st.st_mtime_ns)
    return h.hexdigest(), (n, newest)


def source_checksum(path: str | Path, index: dict | None = None) -> str:
    """sha256 of a CSV file / fingerprint of an image folder, reusing ``index`` entries
    (keyed by resolved path, size and mtime) when the file is unchanged."""
    path = Path(path).resolve()
    if path.is_dir():
        return _folder_fingerprint(path)[0]
    st = path.stat()
    key = str(path)
    if index is not None:
        hit = index.get(key)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return hit["sha256"]
    digest = sha256_of(path)
    if index is not None:
        index[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return digest


def _read_index(folder: Path) -> dict:
    try:
        return json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return {}


#: Where the README tells users to put FER-2013 (the training default).
DEFAULT_SOURCE = "data_cache/fer2013/fer2013.csv"
KAGGLE_URL = ("https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-"
              "recognition-challenge/data")


def resolve_source(path: str | Path) -> Path:
    """The FER-2013 source at ``path``; for a ``fer2013.csv`` that is absent, also its ``.csv.gz``
    and the image-folder release (``train/``, ``test/``) in the same folder. A missing source is a
    :class:`FileNotFoundError` saying where to get FER-2013 and where to put it."""
    path = Path(path)
    if path.exists():
        return path
    if path.name == "fer2013.csv":
        for alt in (path.with_name("fer2013.csv.gz"), path.parent):
            if alt.is_file() or (alt.is_dir() and (alt / "train").is_dir()):
                return alt
    raise FileNotFoundError(
        f"{path}: no FER-2013 CSV or image folder there. Get fer2013.csv from Kaggle (\"Challenges "
        f"in Representation Learning: Facial Expression Recognition Challenge\", {KAGGLE_URL}) and "
        f"put it at {DEFAULT_SOURCE} (plain or .gz, or the image-folder release's train/ and test/ "
        f"in that folder), or pass --data PATH")


def load_fer2013(path: str | Path, cache_root: str | Path | None = "data_cache", *,
                 refresh: bool = False, verbose: bool = False) -> FER2013:
    """FER-2013 from a CSV or an image-folder root, decoded once and cached (module doc).

    ``cache_root=None`` decodes without caching. ``refresh=True`` re-decodes and rewrites the
    cache; an unreadable cache file is decoded again and replaced in any case. ``path`` is
    resolved by :func:`resolve_source`. The returned arrays are read-only views of the cache file's contents.
    """
    path = resolve_source(path)
    t0 = time.perf_counter()
    folder = Path(cache_root) / "fer2013" if cache_root is not None else None
    index = _read_index(folder) if folder is not None else None
    digest = source_checksum(path, index) if folder is not None else ""
    cache_file = folder / f"{digest[:16]}.npz" if folder is not None else None
    if cache_file is not None and cache_file.exists() and not refresh:
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                if str(z["sha256"]) == digest and int(z["version"]) == CACHE_VERSION:
                    ds = FER2013(z["images"], z["labels"], z["usage"], source=str(path),
                                 sha256=digest, cache_file=str(cache_file),
                                 meta={"from_cache": True, "seconds": time.perf_counter() - t0})
                    _validate(ds)
                    return ds
        except Exception:  # noqa: BLE001 -- any unreadable cache file (BadZipFile, a flipped
            pass           # byte, truncation, a foreign file) is decoded again and replaced
    images, labels, usage = read_image_folder(path) if path.is_dir() else read_csv(path)
    ds = FER2013(images, labels, usage, source=str(path), sha256=digest,
                 meta={"from_cache": False, "decode_seconds": time.perf_counter() - t0})
    _validate(ds)
    if cache_file is not None:
        def write(f):
            np.savez(f, images=images, labels=labels, usage=usage, sha256=np.array(digest),
                     source=np.array(str(path)), version=np.array(CACHE_VERSION))
        _atomic_write(cache_file, write)
        ds.cache_file = str(cache_file)
        if not path.is_dir():
            index_now = _read_index(folder)
            index_now.update(index or {})
            _atomic_write(folder / "index.json",
                          lambda f: f.write(json.dumps(index_now, indent=1, sort_keys=True).encode()))
    if verbose:
        print(f"decoded {len(ds)} images from {path} in {ds.meta['decode_seconds']:.1f} s")
    return ds


def _validate(ds: FER2013) -> None:
    n = len(ds.labels)
    if ds.images.shape != (n, SIDE, SIDE) or ds.images.dtype != np.uint8:
        raise ValueError(f"{ds.source}: images {ds.images.shape} {ds.images.dtype}, expected ({n}, 48, 48) uint8")
    if ds.usage.shape != (n,) or (n and (ds.labels.max() > 6 or ds.usage.max() > 2)):
        raise ValueError(f"{ds.source}: labels/usage out of range")


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - thin CLI
    import argparse

    ap = argparse.ArgumentParser(description="decode + cache FER-2013 and print its counts")
    ap.add_argument("path")
    ap.add_argument("--cache_root", default="data_cache")
    ap.add_argument("--refresh", action="store_true")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    ds = load_fer2013(a.path, a.cache_root, refresh=a.refresh)
    print(f"{len(ds)} images, {'cache hit' if ds.meta.get('from_cache') else 'decoded'} in "
          f"{time.perf_counter() - t:.2f} s -> {ds.cache_file}")
    for u, c in ds.counts().items():
        print(f"  {u:12s} {sum(c):6d}  " + " ".join(f"{n}={k}" for n, k in zip(CLASSES, c)))


if __name__ == "__main__":  # pragma: no cover
    main()
