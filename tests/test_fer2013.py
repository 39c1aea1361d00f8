"""FER-2013 decoding (CSV + image folders), validation errors and the uint8 cache."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.fer2013 import (USAGES, FER2013FormatError, _parse_pixel_block,
                               load_fer2013, read_csv, read_image_folder)
from tests.helpers import make_folder

SHARED = Path(__file__).resolve().parents[2] / "shared"
FER = SHARED / "data" / "fer2013"
needs_sample = pytest.mark.skipif(not (FER / "sample.csv").exists(),
                                  reason=f"FER-2013 sample not available at {FER / 'sample.csv'}")


def write_csv(path: Path, rows, header="emotion,pixels,Usage", gz=False) -> Path:
    text = header + "\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def random_rows(n: int, seed: int = 0, usages=USAGES):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
    imgs[:, 0, :5] = [0, 9, 10, 99, 255]       # 1-, 2- and 3-digit values and the extremes
    labels = rng.integers(0, 7, n)
    us = [usages[i % len(usages)] for i in range(n)]
    rows = [(int(l), " ".join(map(str, im.ravel())), u) for im, l, u in zip(imgs, labels, us)]
    return imgs, labels, us, rows


# -- the shared sample ---------------------------------------------------------------------------
@needs_sample
def test_sample_exact_pixels_of_known_rows():
    images, labels, usage = read_csv(FER / "sample.csv")
    assert images.shape == (595, 48, 48) and images.dtype == np.uint8
    # first data row (line 2 of the file)
    assert labels[0] == 3 and USAGES[usage[0]] == "Training"
    assert images[0, 0, :10].tolist() == [234, 231, 160, 122, 96, 77, 100, 97, 86, 59]
    # second row starts "4,226 216 211 105 59"; third "0,163 128 114 88 89"
    assert labels[1] == 4 and images[1, 0, :5].tolist() == [226, 216, 211, 105, 59]
    assert labels[2] == 0 and images[2, 0, :5].tolist() == [163, 128, 114, 88, 89]
    # last row: a PublicTest image whose last two pixels are 151, 161 (row-major, bottom right)
    assert USAGES[usage[-1]] == "PublicTest"
    assert images[-1, 47, 46:].tolist() == [151, 161]
    # 70 Training + 15 PublicTest rows per class (SOURCE.md)
    for u, n in (("Training", 70), ("PublicTest", 15)):
        assert np.bincount(labels[usage == USAGES.index(u)], minlength=7).tolist() == [n] * 7


@needs_sample
def test_sample_matches_a_naive_parser_everywhere():
    images, labels, usage = read_csv(FER / "sample.csv")
    lines = (FER / "sample.csv").read_text().splitlines()[1:]
    ref = np.array([[int(v) for v in ln.split(",")[1].split()] for ln in lines], dtype=np.uint8)
    assert np.array_equal(images.reshape(len(lines), -1), ref)
    assert labels.tolist() == [int(ln.split(",")[0]) for ln in lines]


# -- synthetic CSVs ------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_csv_roundtrip_all_usages(tmp_path, gz):
    imgs, labels, us, rows = random_rows(40, seed=1)
    p = write_csv(tmp_path / ("f.csv.gz" if gz else "f.csv"), rows, gz=gz)
    images, lab, usage = read_csv(p, block_size=1 << 16)   # several blocks
    assert np.array_equal(images, imgs)
    assert np.array_equal(lab, labels)
    assert [USAGES[u] for u in usage] == us
    assert set(usage.tolist()) == {0, 1, 2}                 # PrivateTest accepted


def test_csv_subset_other_column_order_and_spaced_header(tmp_path):
    imgs, labels, _, rows = random_rows(6, seed=2, usages=("PrivateTest",))
    text = "emotion, Usage, pixels\n" + "".join(f"{e},{u},{p}\n" for e, p, u in rows)
    (tmp_path / "icml.csv").write_text(text)
    ds = load_fer2013(tmp_path / "icml.csv", cache_root=None)
    assert ds.usages == ("PrivateTest",)
    assert np.array_equal(ds.images, imgs)
    with pytest.raises(ValueError, match="no Training rows"):
        ds.split("Training")


def test_harmless_whitespace_is_accepted(tmp_path):
    imgs, labels, us, rows = random_rows(3, seed=3)
    e, p, u = rows[1]
    rows[1] = (e, "  " + p.replace(" ", "  ", 5) + " ", u)
    images, _, _ = read_csv(write_csv(tmp_path / "ws.csv", rows))
    assert np.array_equal(images, imgs)


BAD = {
    "short row": (lambda r: (r[0], " ".join(r[1].split()[:-1]), r[2]), "expected 2304 pixel values, got 2303"),
    "non-numeric pixel": (lambda r: (r[0], r[1].split(" ", 1)[0] + " 1a " + r[1].split(" ", 2)[2], r[2]),
                          "pixel 1 is not a non-negative integer: '1a'"),
    "pixel > 255": (lambda r: (r[0], "256 " + r[1].split(" ", 1)[1], r[2]), "pixel 0 = 256 is outside 0..255"),
    "label 7": (lambda r: (7, r[1], r[2]), "emotion '7' is not a class index"),
    "label text": (lambda r: ("x", r[1], r[2]), "emotion 'x'"),
    "usage": (lambda r: (r[0], r[1], "Validation"), "Usage 'Validation' is not one of"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_malformed_row_names_file_and_row_and_writes_nothing(tmp_path, kind):
    _, _, _, rows = random_rows(9, seed=4)
    bad_row = 6
    rows[bad_row] = BAD[kind][0](rows[bad_row])
    p = write_csv(tmp_path / "bad.csv", rows)
    cache = tmp_path / "cache"
    with pytest.raises(FER2013FormatError) as ei:
        load_fer2013(p, cache_root=cache)
    msg = str(ei.value)
    assert str(p) in msg
    assert f"line {bad_row + 2} (data row {bad_row}, 0-based" in msg
    assert BAD[kind][1] in msg
    assert not list((cache / "fer2013").glob("*.npz")) if (cache / "fer2013").exists() else True
    leftovers = [f for f in cache.rglob("*") if f.is_file() and f.name != "index.json"] if cache.exists() else []
    assert leftovers == []


def test_wrong_field_count_names_the_line(tmp_path):
    _, _, _, rows = random_rows(5, seed=5)
    p = write_csv(tmp_path / "fields.csv", rows)
    lines = p.read_text().splitlines()
    lines[3] += ",extra"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(FER2013FormatError, match=r"fields.csv: line 4 \(data row 2.*expected 3 comma-separated fields, got 4"):
        read_csv(p)


def test_missing_column_is_an_error(tmp_path):
    (tmp_path / "h.csv").write_text("emotion,pixel,Usage\n0,1 2,Training\n")
    with pytest.raises(FER2013FormatError, match="lacks column"):
        read_csv(tmp_path / "h.csv")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(0, 3), st.sampled_from([10, 100, 256]))
def test_vectorised_parser_equals_split(seed, n_rows, bad, high):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, high, (n_rows, 2304))
    texts = [" ".join(map(str, r)) for r in rows]
    data = np.frombuffer("".join(texts).encode(), np.uint8)
    offs = np.cumsum([0] + [len(t) for t in texts])
    out = _parse_pixel_block(data, offs)
    assert out is not None and np.array_equal(out, rows.astype(np.uint8))
    # a row that loses a value (merging with its neighbour's) is refused, never mis-parsed
    texts[bad % n_rows] = texts[bad % n_rows].rsplit(" ", 1)[0]
    data = np.frombuffer("".join(texts).encode(), np.uint8)
    offs = np.cumsum([0] + [len(t) for t in texts])
    assert _parse_pixel_block(data, offs) is None


# -- cache ---------------------------------------------------------------------------------------
def test_cache_roundtrip_is_fast_atomic_and_keyed_by_checksum(tmp_path):
    imgs, labels, us, rows = random_rows(30, seed=6)
    p = write_csv(tmp_path / "c.csv", rows)
    cache = tmp_path / "cache"
    a = load_fer2013(p, cache)
    assert a.meta["from_cache"] is False
    files = sorted(f.name for f in (cache / "fer2013").iterdir())
    assert files == [f"{a.sha256[:16]}.npz", "index.json"]          # no temp files left
    t = time.perf_counter()
    b = load_fer2013(p, cache)
    assert time.perf_counter() - t < 1.0
    assert b.meta["from_cache"] is True and b.sha256 == a.sha256
    assert np.array_equal(b.images, imgs) and np.array_equal(b.labels, labels)
    # a corrupt cache file is detected and replaced
    Path(b.cache_file).write_bytes(b"garbage")
    c = load_fer2013(p, cache)
    assert c.meta["from_cache"] is False and np.array_equal(c.images, imgs)
    # a changed source gets a new key
    rows[0] = (rows[0][0], "7 " + rows[0][1].split(" ", 1)[1], rows[0][2])   # same size
    os.utime(write_csv(p, rows), ns=(1, 1))
    d = load_fer2013(p, cache)
    assert d.sha256 != a.sha256 and d.images[0, 0, 0] == 7


@pytest.mark.slow
@pytest.mark.skipif(not (FER / "fer2013.csv.gz").exists(), reason=f"full FER-2013 not at {FER}")
def test_full_csv_counts_and_speed(tmp_path):
    t = time.perf_counter()
    ds = load_fer2013(FER / "fer2013.csv.gz", tmp_path)
    decode = time.perf_counter() - t
    t = time.perf_counter()
    ds2 = load_fer2013(FER / "fer2013.csv.gz", tmp_path)
    assert time.perf_counter() - t < 1.0 and ds2.meta["from_cache"]
    assert ds.counts()["Training"] == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert ds.counts()["PublicTest"] == [467, 56, 496, 895, 653, 415, 607]
    print(f"decode {decode:.2f} s")


# -- image folders -------------------------------------------------------------------------------
def test_image_folder_png_exact_usage_from_prefix_and_order(tmp_path):
    imgs, labels, _, _ = random_rows(6, seed=7)
    names = ["Training_20.png", "PrivateTest_3.png", "Training_3.png", "PublicTest_100.png",
             "PublicTest_7.png", "Training_100.png"]
    make_folder(tmp_path / "fer", imgs, labels, names)
    images, lab, usage = read_image_folder(tmp_path / "fer")
    # ordered by Usage, then numeric id
    order = [2, 0, 5, 4, 3, 1]
    assert [USAGES[u] for u in usage] == ["Training"] * 3 + ["PublicTest"] * 2 + ["PrivateTest"]
    assert np.array_equal(images, imgs[order]) and np.array_equal(lab, labels[order])
    first = load_fer2013(tmp_path / "fer", tmp_path / "cache")
    assert not first.meta["from_cache"]
    again = load_fer2013(tmp_path / "fer", tmp_path / "cache")
    assert again.meta["from_cache"] and np.array_equal(again.images, images)


@needs_sample
def test_image_folder_jpeg_of_sample_rows_decodes_close(tmp_path):
    images, labels, usage = read_csv(FER / "sample.csv")
    pick = [0, 1, 2, 590]
    names = [f"{USAGES[usage[i]]}_{i}.jpg" for i in pick]
    make_folder(tmp_path / "fer", images[pick], labels[pick], names, fmt="JPEG")
    got, lab, us = read_image_folder(tmp_path / "fer")
    assert lab.tolist() == labels[pick].tolist() and us.tolist() == usage[pick].tolist()
    assert np.abs(got.astype(int) - images[pick].astype(int)).mean() < 8   # lossy JPEG


def test_image_folder_errors_name_the_file(tmp_path):
    from PIL import Image

    d = tmp_path / "a" / "train" / "happy"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(d / "Training_1.png")
    with pytest.raises(FER2013FormatError, match=r"Training_1.png: image is 48x40, expected 48x48"):
        read_image_folder(tmp_path / "a")
    bad = tmp_path / "b" / "train" / "contempt"
    bad.mkdir(parents=True)
    with pytest.raises(FER2013FormatError, match="unknown class folder 'contempt'"):
        read_image_folder(tmp_path / "b")
    t = tmp_path / "c" / "test" / "sad"
    t.mkdir(parents=True)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(t / "img1.png")
    with pytest.raises(FER2013FormatError, match="img1.png: cannot tell its Usage"):
        read_image_folder(tmp_path / "c")
