"""Cell-type vocabularies of the MICrONS minnie65 V1 column.

Two labelings exist for the same cells:

* **coarse types**: the AIBS metamodel (``aibs_metamodel_celltypes_v661``) has 7 excitatory
  (23P, 4P, 5P-IT, 5P-ET, 5P-NP, 6P-IT, 6P-CT) and 4 inhibitory (BC basket, BPC bipolar,
  MC Martinotti, NGC neurogliaform) types. The column's own labels
  (``allen_v1_column_types_slanted_ref``, Schneider-Mizell et al. 2025) add 6P-U (layer-6
  pyramidal cells of unresolved subclass), WM-P (white-matter pyramidal cells), ``Unsure E`` and
  ``Unsure I`` (neurons of known class but no confident type) and, in the CAVE reference table,
  a plain ``Unsure``. ``5P-PT`` (pyramidal tract) is the column's name for ``5P-ET``
  (extratelencephalic): it is read as :data:`CELL_TYPE_ALIASES` says, so one population holds them.
* **column m-types** (``allen_column_mtypes_v2``; Schneider-Mizell et al. 2025): 18 excitatory
  (L2a ... L6wm) and 4 inhibitory (PTC proximal-, DTC distal-, ITC inhibitory-, STC sparsely
  targeting cells).

Every label but the plain ``Unsure`` maps to an excitatory ("E") or inhibitory ("I") class. A
plain ``Unsure`` cell takes its class from the row's ``classification_system`` when that names
one (``aibs_coarse_excitatory`` -> ``Unsure E``, ``aibs_coarse_inhibitory`` -> ``Unsure I``);
otherwise it stays ``Unsure`` with class :data:`UNKNOWN_CLASS` ("U"): it is a node of the graph,
but neither an excitatory unit of any network layer nor a source of inhibition (every
E/I-dependent feature tests ``ei == "E"`` or ``ei == "I"``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

#: The AIBS metamodel coarse types (the vocabulary of the surrogate and volume generators).
METAMODEL_EXCITATORY: tuple[str, ...] = ("23P", "4P", "5P-IT", "5P-ET", "5P-NP", "6P-IT", "6P-CT")
METAMODEL_INHIBITORY: tuple[str, ...] = ("BC", "BPC", "MC", "NGC")
METAMODEL_TYPES: tuple[str, ...] = METAMODEL_EXCITATORY + METAMODEL_INHIBITORY

#: Every coarse label of the MICrONS column (canonical names), by class.
EXCITATORY_TYPES: tuple[str, ...] = METAMODEL_EXCITATORY + ("6P-U", "WM-P", "Unsure E")
INHIBITORY_TYPES: tuple[str, ...] = METAMODEL_INHIBITORY + ("Unsure I",)
#: The plain "Unsure" of the CAVE column reference table: class unknown unless the row says.
UNSURE = "Unsure"
UNKNOWN_CLASS = "U"
COARSE_TYPES: tuple[str, ...] = EXCITATORY_TYPES + INHIBITORY_TYPES + (UNSURE,)

#: Other spellings of a coarse type in MICrONS tables -> the canonical name used here.
CELL_TYPE_ALIASES: dict[str, str] = {"5P-PT": "5P-ET"}

EXCITATORY_MTYPES: tuple[str, ...] = (
    "L2a", "L2b", "L2c", "L3a", "L3b", "L4a", "L4b", "L4c", "L5a", "L5b", "L5ET", "L5NP",
    "L6tall-a", "L6tall-b", "L6tall-c", "L6short-a", "L6short-b", "L6wm",
)
INHIBITORY_MTYPES: tuple[str, ...] = ("PTC", "DTC", "ITC", "STC")
MTYPES: tuple[str, ...] = EXCITATORY_MTYPES + INHIBITORY_MTYPES

_EI: dict[str, str] = {t: "E" for t in EXCITATORY_TYPES + EXCITATORY_MTYPES}
_EI.update({t: "I" for t in INHIBITORY_TYPES + INHIBITORY_MTYPES})
_EI[UNSURE] = UNKNOWN_CLASS
_EI.update({alias: _EI[name] for alias, name in CELL_TYPE_ALIASES.items()})


class UnknownCellTypeError(ValueError):
    """A table holds a cell-type label outside the known vocabularies."""


def ei_class(label: str) -> str:
    """'E' or 'I' (or 'U' for the plain 'Unsure') for a coarse type or m-type label;
    raises :class:`UnknownCellTypeError`."""
    try:
        return _EI[label]
    except KeyError:
        raise UnknownCellTypeError(
            f"unknown cell type {label!r}; known: {', '.join(COARSE_TYPES + MTYPES)}"
        ) from None


def class_of_system(system: object) -> str | None:
    """'E' or 'I' from a CAVE ``classification_system`` that names one (e.g.
    ``aibs_coarse_excitatory``), else None."""
    s = str(system).lower() if isinstance(system, str) else ""
    if "inhibitory" in s:
        return "I"
    if "excitatory" in s:
        return "E"
    return None


def check_labels(
    labels: pd.Series, vocabulary: Iterable[str], *, table: str, field: str = "cell_type"
) -> None:
    """Raise a clear error naming the table, row and label if a label is not in ``vocabulary``."""
    vocab = set(vocabulary)
    bad = ~labels.isin(vocab)
    if bad.any():
        row = labels.index[bad.to_numpy().nonzero()[0][0]]
        raise UnknownCellTypeError(
            f"{table}: row {row}: unknown {field} {labels.loc[row]!r} "
            f"({int(bad.sum())} rows with unknown labels; --keep-unknown-types keeps them as-is); "
            f"known: {', '.join(sorted(vocab))}"
        )


def resolve_coarse_types(labels: pd.Series, systems: pd.Series | None = None, *, table: str,
                         keep_unknown: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coarse type and E/I class of each row of a cell-type table.

    ``labels`` (n,) as the table holds them; ``systems`` (n,) its ``classification_system``.
    Aliases become their canonical name (``5P-PT`` -> ``5P-ET``); a plain ``Unsure`` becomes
    ``Unsure E``/``Unsure I`` when ``systems`` names the class, else stays ``Unsure`` (class "U").
    A label outside :data:`COARSE_TYPES` (and the aliases) raises :class:`UnknownCellTypeError`
    naming ``table`` and the row, unless ``keep_unknown``: then it is kept as-is, with the class
    ``systems`` names or "U". Returns ``(cell_type, ei)``, two (n,) object arrays.
    """
    labels = labels.astype(object).where(labels.notna(), "<missing>").astype(str)
    if not keep_unknown:
        check_labels(labels, COARSE_TYPES + tuple(CELL_TYPE_ALIASES), table=table)
    canon = labels.map(lambda x: CELL_TYPE_ALIASES.get(x, x))
    sys_class = (systems.map(class_of_system) if systems is not None
                 else pd.Series(None, index=labels.index, dtype=object))
    unsure = (canon == UNSURE) & sys_class.notna()
    canon = canon.where(~unsure, UNSURE + " " + sys_class.fillna(""))
    ei = canon.map(lambda x: _EI.get(x))
    ei = ei.where(ei.notna(), sys_class).fillna(UNKNOWN_CLASS)
    return canon.to_numpy(dtype=object), ei.to_numpy(dtype=object)
