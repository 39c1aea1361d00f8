"""Canonical schemas and the Parquet cache: bad input gets a clear error, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from connectomics.cache import CacheError, PartStore, TableCache, write_parquet_atomic
from connectomics.cell_types import UnknownCellTypeError
from connectomics.cells import assemble_cells
from connectomics.schema import COLUMN_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE, SchemaError, conform, validate


def _column(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "id": np.arange(n), "target_id": 100 + np.arange(n), "pt_root_id": 864691135000000000 + np.arange(n),
        "classification_system": "aibs_coarse_excitatory", "cell_type": ["23P", "4P", "BC", "6P-IT"][:n],
        "pt_position_x": 700_000.0, "pt_position_y": 500_000.0 + 100_000 * np.arange(n),
        "pt_position_z": 850_000.0,
    })


def _synapses(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n), "pre_pt_root_id": np.arange(n), "post_pt_root_id": np.arange(n) + 1,
                         "size": np.arange(n) * 10 + 1, "ctr_pt_position_x": 1.0, "ctr_pt_position_y": 2.0,
                         "ctr_pt_position_z": 3.0})


def test_missing_column_is_named():
    df = _synapses().drop(columns=["size"])
    with pytest.raises(SchemaError, match=r"synapses_pni_2.*lacks column\(s\) \['size'\]"):
        conform(df, SYNAPSE_TABLE, origin="file.csv")


def test_wrong_dtype_names_row_and_column():
    df = _synapses().astype({"pre_pt_root_id": object})
    df.loc[3, "pre_pt_root_id"] = "abc"
    with pytest.raises(SchemaError, match=r"file.csv: .*'pre_pt_root_id' must be int64, row 3 holds 'abc'"):
        conform(df, SYNAPSE_TABLE, origin="file.csv")


def test_fractional_id_is_refused():
    df = _synapses().astype({"id": float})
    df.loc[2, "id"] = 2.5
    with pytest.raises(SchemaError, match="row 2"):
        conform(df, SYNAPSE_TABLE)


def test_nan_position_names_row():
    df = conform(_column(), COLUMN_TABLE)
    df.loc[2, "pt_position_y"] = np.nan
    with pytest.raises(SchemaError, match=r"NaN in column 'pt_position_y' at row 2"):
        validate(df, COLUMN_TABLE)


def test_duplicate_root_ids():
    df = conform(_column(), COLUMN_TABLE)
    df.loc[3, "pt_root_id"] = df.loc[1, "pt_root_id"]
    with pytest.raises(SchemaError, match=r"duplicate pt_root_id .* at row 3"):
        validate(df, COLUMN_TABLE)


def test_empty_table():
    with pytest.raises(SchemaError, match="is empty"):
        validate(conform(_column().iloc[:0], COLUMN_TABLE), COLUMN_TABLE)


def test_unknown_cell_type_names_table_and_row():
    df = conform(_column(), COLUMN_TABLE)
    df.loc[2, "cell_type"] = "Chandelier"  # no MICrONS label ("Unsure" is one: test_cell_types.py)
    with pytest.raises(UnknownCellTypeError, match=r"allen_v1_column_types_slanted_ref: row 2: unknown cell_type 'Chandelier'"):
        assemble_cells({COLUMN_TABLE: df})


def test_cells_get_layers_from_depth():
    nodes = assemble_cells({COLUMN_TABLE: conform(_column(), COLUMN_TABLE)})
    assert list(nodes["ei"]) == ["E", "E", "I", "E"]
    assert nodes["depth_um"].is_monotonic_increasing
    assert set(nodes["layer"]) <= {"L1", "L2/3", "L4", "L5", "L6", "WM"}


def test_cache_round_trip_and_manifest(tmp_path):
    cache = TableCache(tmp_path, "stack", 7)
    cache.write(SYNAPSE_TABLE, _synapses(), source="test", query={"q": 1})
    got = cache.read(SYNAPSE_TABLE)
    pd.testing.assert_frame_equal(got, conform(_synapses(), SYNAPSE_TABLE))
    entry = json.loads((tmp_path / "stack" / "v7" / "manifest.json").read_text())[SYNAPSE_TABLE]
    assert entry["rows"] == 5 and entry["source"] == "test" and len(entry["sha256"]) == 64
    assert entry["schema"]["pre_pt_root_id"] == "int64" and entry["schema"]["ctr_pt_position_x"] == "float64"


def test_checksum_mismatch_is_refused(tmp_path):
    cache = TableCache(tmp_path, "stack", 1)
    cache.write(SYNAPSE_TABLE, _synapses(), source="test")
    # a valid Parquet file with other content: schema fine, checksum not
    write_parquet_atomic(conform(_synapses(6), SYNAPSE_TABLE), cache.path(SYNAPSE_TABLE))
    with pytest.raises(CacheError, match="checksum"):
        cache.read(SYNAPSE_TABLE)


def test_schema_mismatch_is_refused(tmp_path):
    cache = TableCache(tmp_path, "stack", 1)
    cache.write(SYNAPSE_TABLE, _synapses(), source="test")
    m = json.loads(cache.manifest_path.read_text())
    m[SYNAPSE_TABLE]["schema"]["size"] = "int64"
    cache.manifest_path.write_text(json.dumps(m))
    with pytest.raises(CacheError, match="schema"):
        cache.read(SYNAPSE_TABLE)


def test_truncated_parquet_is_a_clear_error(tmp_path):
    cache = TableCache(tmp_path, "stack", 1)
    path = cache.write(SYNAPSE_TABLE, _synapses(), source="test")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=str(path.name)):
        cache.read(SYNAPSE_TABLE, verify=False)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    cache = TableCache(tmp_path, "stack", 1)

    def broken(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 half")
        raise IOError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(IOError):
        cache.write(SYNAPSE_TABLE, _synapses(), source="test")
    assert not cache.path(SYNAPSE_TABLE).exists()
    assert not cache.has(SYNAPSE_TABLE)
    assert [p.name for p in cache.dir.iterdir()] == [] if cache.dir.exists() else True


def test_bad_table_is_not_cached(tmp_path):
    cache = TableCache(tmp_path, "stack", 1)
    df = _synapses()
    df.loc[1, "id"] = df.loc[0, "id"]
    with pytest.raises(SchemaError, match="duplicate id"):
        cache.write(SYNAPSE_TABLE, df, source="test")
    assert not cache.path(SYNAPSE_TABLE).exists()


def test_part_store_keys_in_order(tmp_path):
    parts = PartStore(tmp_path / "x.parts")
    for k in ("00002", "00000", "00001"):
        parts.write(k, conform(_synapses(2).assign(id=[int(k) * 2, int(k) * 2 + 1]), SYNAPSE_TABLE))
    assert parts.keys() == ["00000", "00001", "00002"]
    assert parts.read_all(SYNAPSE_TABLE)["id"].tolist() == [0, 1, 2, 3, 4, 5]
    parts.clear()
    assert parts.keys() == []


# -- tables shaped like real ones: typed booleans, manifests, partitions ---------------------------
def _proofreading(status) -> pd.DataFrame:
    n = len(status)
    return pd.DataFrame({"id": np.arange(n) + 1, "pt_root_id": np.arange(n) + 10, "valid_id": np.arange(n) + 10,
                         "status_dendrite": status, "status_axon": status,
                         "strategy_dendrite": "dendrite_extended", "strategy_axon": None})


@pytest.mark.parametrize("status", [
    [True, False, True],                        # caveclient >= 8: typed
    np.array([True, False, True]),              # numpy bool column
    ["t", "f", None],                           # Postgres text dump
    ["extended", "non", "clean"],               # the older public table's words
])
def test_bool_proofreading_columns_survive_the_cache_round_trip(tmp_path, status):
    cache = TableCache(tmp_path, "stack", 1)
    cache.write(PROOFREADING_TABLE, _proofreading(status), source="test")
    got = cache.read(PROOFREADING_TABLE)  # guards against: schema {'status_axon': 'bool'} != manifest 'object'
    assert str(got["status_axon"].dtype) == "boolean"
    assert got["status_dendrite"].tolist()[:2] == [True, False]
    assert cache.manifest()[PROOFREADING_TABLE]["schema"]["status_axon"] == "boolean"


def test_unknown_status_text_is_a_clear_error():
    with pytest.raises(SchemaError, match=r"'status_dendrite' must be a boolean, row 1 holds 'maybe'"):
        conform(_proofreading(["t", "maybe"]), PROOFREADING_TABLE, origin="x.csv")


def test_manifest_records_the_schema_read_back(tmp_path):
    """An object column of Python bools is written as Parquet bool and reads back as bool."""
    cache = TableCache(tmp_path, "stack", 1)
    df = pd.DataFrame({"flag": np.array([True, False], dtype=object), "n": [1, 2]})
    cache.write("not_a_canonical_table", df, source="test")
    assert cache.manifest()["not_a_canonical_table"]["schema"] == {"flag": "bool", "n": "int64"}
    assert cache.read("not_a_canonical_table")["flag"].tolist() == [True, False]


def test_reset_removes_a_corrupt_manifest(tmp_path):
    cache = TableCache(tmp_path, "stack", 1)
    cache.write(SYNAPSE_TABLE, _synapses(), source="test")
    (cache.dir / "graph").mkdir()
    cache.manifest_path.write_text("{ not json")
    with pytest.raises(CacheError, match="corrupt manifest.*--refresh"):
        cache.manifest()
    cache.reset()
    assert cache.manifest() == {} and not cache.path(SYNAPSE_TABLE).exists()
    assert (cache.dir / "graph").is_dir()


def test_one_store_holds_partitioned_tables(tmp_path):
    """TableCache keeps a table too large for one file as checksummed parts."""
    from connectomics.cache import write_partition_file

    cache = TableCache(tmp_path, "stack", 1)
    frames = [conform(_synapses(3).assign(id=np.arange(3) + 3 * b), SYNAPSE_TABLE) for b in range(3)]
    entries = [write_partition_file(cache.dir, SYNAPSE_TABLE, b, df, note=b) for b, df in enumerate(frames)]
    assert entries[2]["note"] == 2 and entries[0]["schema"]["size"] == "float64"  # NaN = unknown size
    cache.update_manifest({e["file"][:-len(".parquet")]: e for e in entries})
    with pytest.raises(CacheError, match="no complete partitioned"):
        cache.partition_files(SYNAPSE_TABLE)
    cache.record_partitioned(SYNAPSE_TABLE, entries, source="test")
    files = cache.partition_files(SYNAPSE_TABLE)
    assert files == [cache.partition_path(SYNAPSE_TABLE, b) for b in range(3)]
    assert cache.manifest()[SYNAPSE_TABLE]["rows"] == 9
    pd.testing.assert_frame_equal(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True),
                                  pd.concat(frames, ignore_index=True))
    write_parquet_atomic(frames[0], files[1])  # tampered part
    with pytest.raises(CacheError, match="part-00001.parquet: checksum"):
        cache.partition_files(SYNAPSE_TABLE)
    cache.drop_partitions(SYNAPSE_TABLE)
    assert cache.manifest() == {} and not (cache.dir / SYNAPSE_TABLE).exists()
