"""Assemble the column's cell table (graph nodes) from the pulled CAVE tables.

One row per cell of the column reference table (``allen_v1_column_types_slanted_ref``), with its
coarse type (from that table), m-type (``allen_column_mtypes_v2``, by nucleus id), soma position
(``nucleus_detection_v0``, else the reference table's point), depth below the pia and layer
(:mod:`connectomics.layers`), and E/I class. Coarse types are canonical
(:func:`connectomics.cell_types.resolve_coarse_types`: aliases renamed, a plain ``Unsure`` given
its class where the table's ``classification_system`` names it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .cell_types import MTYPES, check_labels, resolve_coarse_types
from .graph import NODE_COLUMNS
from .layers import LayerBounds, depth_um
from .schema import COLUMN_TABLE, MTYPE_TABLE, NUCLEUS_TABLE, SchemaError, validate

#: m-type of a cell that the m-type table does not cover
NO_MTYPE = "none"


def assemble_cells(tables: dict[str, pd.DataFrame], bounds: LayerBounds | None = None, *,
                   keep_unknown_types: bool = False) -> pd.DataFrame:
    """Graph nodes (columns of :data:`connectomics.graph.NODE_COLUMNS`), sorted by root id.

    ``keep_unknown_types``: keep a coarse label outside the MICrONS vocabularies as its own type
    (class from ``classification_system``, else "U") instead of raising.

    Raises :class:`~connectomics.schema.SchemaError` or
    :class:`~connectomics.cell_types.UnknownCellTypeError` naming the table and row for an empty
    table, NaN positions, duplicate root ids or an unknown cell type.
    """
    bounds = bounds or LayerBounds()
    reference = tables[COLUMN_TABLE]
    validate(reference, COLUMN_TABLE)
    cell_type, ei = resolve_coarse_types(reference["cell_type"], reference["classification_system"],
                                         table=COLUMN_TABLE, keep_unknown=keep_unknown_types)

    mt = tables.get(MTYPE_TABLE)
    mtype = pd.Series(NO_MTYPE, index=reference.index, dtype=object)
    if mt is not None and len(mt):
        if not keep_unknown_types:
            check_labels(mt["cell_type"], MTYPES, table=MTYPE_TABLE)
        mtype = reference["target_id"].map(mt.set_index("target_id")["cell_type"]).fillna(NO_MTYPE)

    pos = reference[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(dtype=float)
    nuc = tables.get(NUCLEUS_TABLE)
    if nuc is not None and len(nuc):
        nuc_pos = nuc.set_index("id")[["pt_position_x", "pt_position_y", "pt_position_z"]]
        found = reference["target_id"].isin(nuc_pos.index).to_numpy()
        pos[found] = nuc_pos.loc[reference["target_id"][found]].to_numpy(dtype=float)
    if np.isnan(pos).any():
        row = int(np.isnan(pos).any(axis=1).nonzero()[0][0])
        raise SchemaError(f"{COLUMN_TABLE}: NaN soma position at row {row}")

    d = depth_um(pos)
    nodes = pd.DataFrame({
        "root_id": reference["pt_root_id"].to_numpy(np.int64),
        "nucleus_id": reference["target_id"].to_numpy(np.int64),
        "cell_type": cell_type,
        "mtype": mtype.astype(str).to_numpy(),
        "layer": bounds.assign(d),
        "ei": ei,
        "x_nm": pos[:, 0], "y_nm": pos[:, 1], "z_nm": pos[:, 2],
        "depth_um": d,
    })
    return nodes.sort_values("root_id", kind="stable").reset_index(drop=True)[list(NODE_COLUMNS)]
