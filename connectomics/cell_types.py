"""Cell-type vocabularies of the MICrONS minnie65 V1 column.

Two labelings exist for the same cells:

* **coarse types** (``aibs_metamodel_celltypes_v661``, ``allen_v1_column_types_slanted_ref``):
  7 excitatory (23P, 4P, 5P-IT, 5P-ET, 5P-NP, 6P-IT, 6P-CT) and 4 inhibitory
  (BC basket, BPC bipolar, MC Martinotti, NGC neurogliaform);
* **column m-types** (``allen_column_mtypes_v2``; Schneider-Mizell et al. 2025): 18 excitatory
  (L2a ... L6wm) and 4 inhibitory (PTC proximal-, DTC distal-, ITC inhibitory-, STC sparsely
  targeting cells).

Every label maps to an excitatory ("E") or inhibitory ("I") class.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

EXCITATORY_TYPES: tuple[str, ...] = ("23P", "4P", "5P-IT", "5P-ET", "5P-NP", "6P-IT", "6P-CT")
INHIBITORY_TYPES: tuple[str, ...] = ("BC", "BPC", "MC", "NGC")
COARSE_TYPES: tuple[str, ...] = EXCITATORY_TYPES + INHIBITORY_TYPES

EXCITATORY_MTYPES: tuple[str, ...] = (
    "L2a", "L2b", "L2c", "L3a", "L3b", "L4a", "L4b", "L4c", "L5a", "L5b", "L5ET", "L5NP",
    "L6tall-a", "L6tall-b", "L6tall-c", "L6short-a", "L6short-b", "L6wm",
)
INHIBITORY_MTYPES: tuple[str, ...] = ("PTC", "DTC", "ITC", "STC")
MTYPES: tuple[str, ...] = EXCITATORY_MTYPES + INHIBITORY_MTYPES

_EI: dict[str, str] = {t: "E" for t in EXCITATORY_TYPES + EXCITATORY_MTYPES}
_EI.update({t: "I" for t in INHIBITORY_TYPES + INHIBITORY_MTYPES})


class UnknownCellTypeError(ValueError):
    """A table holds a cell-type label outside the known vocabularies."""


def ei_class(label: str) -> str:
    """'E' or 'I' for a coarse type or m-type label; raises :class:`UnknownCellTypeError`."""
    try:
        return _EI[label]
    except KeyError:
        raise UnknownCellTypeError(
            f"unknown cell type {label!r}; known: {', '.join(COARSE_TYPES + MTYPES)}"
        ) from None


def check_labels(
    labels: pd.Series, vocabulary: Iterable[str], *, table: str, column: str = "cell_type"
) -> None:
    """Raise a clear error naming the table, row and label if a label is not in ``vocabulary``."""
    vocab = set(vocabulary)
    bad = ~labels.isin(vocab)
    if bad.any():
        row = labels.index[bad.to_numpy().nonzero()[0][0]]
        raise UnknownCellTypeError(
            f"{table}: row {row}: unknown {column} {labels.loc[row]!r} "
            f"({int(bad.sum())} rows with unknown labels); known: {', '.join(sorted(vocab))}"
        )
