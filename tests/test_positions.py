"""connectomics.positions: one parser of position columns, units always explicit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connectomics.positions import NM, VOXEL_NM, position_nm, split_positions_nm
from connectomics.schema import SchemaError
from connectomics.sources.volume import read_cell_table


def test_split_and_text_forms_agree_in_nm():
    split = pd.DataFrame({"pt_position_x": [1, 2], "pt_position_y": [3, 4], "pt_position_z": [5, 6]})
    text = pd.DataFrame({"pt_position": ["[1 3 5]", "(2, 4, 6)"]})
    want = np.array([[4.0, 12.0, 200.0], [8.0, 16.0, 240.0]])
    np.testing.assert_array_equal(position_nm(split, "pt_position", VOXEL_NM, origin="a"), want)
    np.testing.assert_array_equal(position_nm(text, "pt_position", VOXEL_NM, origin="b"), want)
    np.testing.assert_array_equal(position_nm(split, "pt_position", NM, origin="a"), want / VOXEL_NM)
    out = split_positions_nm(text.copy(), ["pt_position", "ctr_pt_position"], VOXEL_NM, origin="b")
    assert out["pt_position_z"].tolist() == [200.0, 240.0] and "ctr_pt_position_x" not in out


def test_bad_text_names_origin_and_row():
    with pytest.raises(SchemaError, match=r"f.csv: row 1: pt_position '\[1 2 x\]' is not 3 numbers"):
        position_nm(pd.DataFrame({"pt_position": ["[1 2 3]", "[1 2 x]"]}), "pt_position", NM, origin="f.csv")


def test_volume_and_snapshot_read_pt_position_through_the_same_parser():
    """The volume's cell table: pt_x/y/z are voxels, pt_position_* are nm, both via position_nm."""
    vox = pd.DataFrame({"cell_type": ["23P"], "pt_root_id": [7], "pt_x": [100], "pt_y": [200], "pt_z": [10]})
    nm = pd.DataFrame({"cell_type": ["23P"], "pt_root_id": [7], "pt_position": ["[400 800 400]"]})
    a, b = read_cell_table(vox), read_cell_table(nm)
    assert a[["x_nm", "y_nm", "z_nm"]].to_numpy().tolist() == [[400.0, 800.0, 400.0]]
    pd.testing.assert_frame_equal(a, b)
