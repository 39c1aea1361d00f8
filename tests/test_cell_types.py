"""Every real MICrONS coarse label is a type of its own, none folded into another."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from connectomics.cell_types import (
    CELL_TYPE_ALIASES, COARSE_TYPES, UnknownCellTypeError, ei_class, resolve_coarse_types,
)
from connectomics.cells import assemble_cells
from connectomics.schema import COLUMN_TABLE, conform

REAL_LABELS = {  # label as MICrONS tables spell it -> (canonical type, class)
    "23P": ("23P", "E"), "4P": ("4P", "E"), "5P-IT": ("5P-IT", "E"), "5P-PT": ("5P-ET", "E"),
    "5P-ET": ("5P-ET", "E"), "5P-NP": ("5P-NP", "E"), "6P-IT": ("6P-IT", "E"), "6P-CT": ("6P-CT", "E"),
    "6P-U": ("6P-U", "E"), "WM-P": ("WM-P", "E"), "BC": ("BC", "I"), "MC": ("MC", "I"),
    "BPC": ("BPC", "I"), "NGC": ("NGC", "I"), "Unsure E": ("Unsure E", "E"), "Unsure I": ("Unsure I", "I"),
}


def _column(labels: list[str], systems: list[str]) -> pd.DataFrame:
    n = len(labels)
    return conform(pd.DataFrame({
        "id": np.arange(n), "target_id": 100 + np.arange(n), "pt_root_id": 864691135000000000 + np.arange(n),
        "classification_system": systems, "cell_type": labels,
        "pt_position_x": 700_000.0, "pt_position_y": 500_000.0 + 1000.0 * np.arange(n), "pt_position_z": 850_000.0,
    }), COLUMN_TABLE)


def test_every_real_label_is_a_type_with_its_class():
    labels = list(REAL_LABELS)
    nodes = assemble_cells({COLUMN_TABLE: _column(labels, ["aibs_coarse_excitatory"] * len(labels))})
    got = dict(zip(labels, zip(nodes["cell_type"], nodes["ei"])))  # nodes sorted by root id = input order
    assert got == REAL_LABELS
    assert CELL_TYPE_ALIASES == {"5P-PT": "5P-ET"} and "5P-PT" not in COARSE_TYPES


def test_plain_unsure_takes_its_class_from_the_classification_system():
    labels = ["Unsure", "Unsure", "Unsure", "23P"]
    systems = ["aibs_coarse_excitatory", "aibs_coarse_inhibitory", "aibs_coarse_unclear", "aibs_coarse_excitatory"]
    nodes = assemble_cells({COLUMN_TABLE: _column(labels, systems)})
    assert nodes["cell_type"].tolist() == ["Unsure E", "Unsure I", "Unsure", "23P"]
    assert nodes["ei"].tolist() == ["E", "I", "U", "E"]
    assert ei_class("Unsure") == "U"


def test_unknown_label_is_an_error_unless_kept():
    col = _column(["23P", "Chandelier", "BC"], ["aibs_coarse_excitatory", "aibs_coarse_inhibitory", "x"])
    with pytest.raises(UnknownCellTypeError, match=r"row 1: unknown cell_type 'Chandelier'.*--keep-unknown-types"):
        assemble_cells({COLUMN_TABLE: col})
    nodes = assemble_cells({COLUMN_TABLE: col}, keep_unknown_types=True)
    assert nodes["cell_type"].tolist() == ["23P", "Chandelier", "BC"]
    assert nodes["ei"].tolist() == ["E", "I", "I"]  # class of the kept label: its classification system
    ct, ei = resolve_coarse_types(pd.Series(["Foo"]), None, table="t", keep_unknown=True)
    assert ct.tolist() == ["Foo"] and ei.tolist() == ["U"]


def test_build_graph_cli_keeps_unknown_types_on_request(tmp_path, monkeypatch, capsys):
    from connectomics.sources.surrogate import SurrogateSource
    from pipelines import build_graph as cli

    fetch = SurrogateSource.fetch_table

    def with_odd_label(self, table, **kw):
        df = fetch(self, table, **kw)
        if table == COLUMN_TABLE:
            df.loc[7, "cell_type"] = "Chandelier"
        return df

    monkeypatch.setattr(SurrogateSource, "fetch_table", with_odd_label)
    args = ["--source", "surrogate", "--cache", str(tmp_path), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "row 7: unknown cell_type 'Chandelier'" in err and err.count("\n") == 1
    assert cli.main(args + ["--keep-unknown-types"]) == 0
    assert "Chandelier" in capsys.readouterr().out  # a type of its own in the summary
    assert cli.parse_args([]).kind == "column" and not cli.parse_args([]).keep_unknown_types
