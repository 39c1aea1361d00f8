"""``surrogate``: a V1 column generated offline from published figures. NOT MICrONS synapses.

The cells follow the real column's census (:data:`connectomics.census.CENSUS`: 1,351 neurons,
exact joint m-type, coarse-type and layer counts); somata are placed uniformly in a 100 x 100 um lateral square and,
in depth, in bands of their layer (the bands of one layer ordered by m-type). Each ordered pair
(i, j), i != j, is connected with probability

    p_ij = pmax[c_i, c_j] * exp(-r_ij^2 / (2 sigma[e_i, e_j]^2))

with c the coarse type, e the E/I class and r_ij the lateral (x-z) soma distance in um
(:data:`connectomics.census.PMAX`, fitted so that the type-level connection probabilities are the
real MICrONS column's in expectation; :data:`connectomics.census.SIGMA_UM`). A connected pair gets
1 + Poisson(lambda_pre) synapses of lognormal size (voxels), placed within ~30 um of the
postsynaptic soma. Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``,
so a seed fixes the column exactly. The tables come out in the canonical CAVE schemas; the
manifest records ``source: surrogate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import census
from ..cache import PartStore
from ..cell_types import ei_class
from ..layers import LayerBounds, frame_um_to_nm
from ..schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE, SYNAPSE_TABLE,
    conform,
)
from .base import Source, SourceError, rows_in

#: Column centre in the minnie65 frame (um): lateral x, z.
COLUMN_CENTER_UM = (700.0, 850.0)
COLUMN_WIDTH_UM = census.COLUMN_WIDTH_UM
ROOT_ID_BASE = 864691135000000000
NUCLEUS_ID_BASE = 200000


@dataclass
class SurrogateColumn:
    """The generated column: cells (one row each) and synapses."""

    cells: pd.DataFrame
    synapses: pd.DataFrame
    pair_probability: np.ndarray  # (n, n) p_ij used for sampling (diagonal 0)


def layer_bands(bounds: LayerBounds) -> pd.DataFrame:
    """The census table (:func:`connectomics.census.census_table`) with the depth band of every
    row (``top_um``, ``bottom_um``, um below the pia): its layer's band of ``bounds``, cut in
    m-type order among the layer's excitatory rows; an inhibitory row spans its whole layer."""
    table = census.census_table()
    tops, bottoms = np.zeros(len(table)), np.zeros(len(table))
    for layer, rows in table.groupby("layer", sort=False):
        top, bottom = bounds.range_of(layer)
        if layer == "WM":
            bottom = top + 30.0
        top, bottom = top + 1.0, bottom - 1.0
        exc = rows[rows["cell_type"].map(ei_class) == "E"]
        if len(exc):
            edges = top + (bottom - top) * np.concatenate([[0], np.cumsum(exc["n_cells"])]) / exc["n_cells"].sum()
            tops[exc.index], bottoms[exc.index] = edges[:-1], edges[1:]
        inh = rows.index.difference(exc.index)
        tops[inh], bottoms[inh] = top, bottom
    table["top_um"], table["bottom_um"] = tops, bottoms
    return table


def generate_column(seed: int = 0, bounds: LayerBounds | None = None) -> SurrogateColumn:
    """Draw a surrogate column (cells and synapses) from the embedded figures with ``seed``."""
    bounds = bounds or LayerBounds()
    rng = np.random.default_rng(seed)
    bands = layer_bands(bounds)
    rep = bands.loc[bands.index.repeat(bands["n_cells"])].reset_index(drop=True)
    n = len(rep)
    depth = rng.uniform(rep["top_um"], rep["bottom_um"])
    half = COLUMN_WIDTH_UM / 2
    lat = rng.uniform(-half, half, size=(n, 2)) + np.asarray(COLUMN_CENTER_UM)
    frame = np.column_stack([lat[:, 0], depth, lat[:, 1]])
    pos_nm = frame_um_to_nm(frame)
    order = rng.permutation(n)  # shuffle so table order says nothing about type
    rep, frame, pos_nm = rep.iloc[order].reset_index(drop=True), frame[order], pos_nm[order]
    root_ids = ROOT_ID_BASE + np.sort(rng.choice(10**9, size=n, replace=False)).astype(np.int64)
    nucleus_ids = NUCLEUS_ID_BASE + np.sort(rng.choice(10**6, size=n, replace=False)).astype(np.int64)
    ei = rep["cell_type"].map(ei_class).to_numpy()
    cells = pd.DataFrame({
        "nucleus_id": nucleus_ids, "root_id": root_ids,
        "cell_type": rep["cell_type"].to_numpy(), "mtype": rep["mtype"].to_numpy(),
        "layer": rep["layer"].to_numpy(), "ei": ei,
        "pmax_class": [census.pmax_class(c, l) for c, l in zip(rep["cell_type"], rep["layer"])],
        "x_nm": pos_nm[:, 0], "y_nm": pos_nm[:, 1], "z_nm": pos_nm[:, 2],
        "volume_um3": np.round(rng.lognormal(np.log(250.0), 0.3, size=n), 3),
    })

    # connection probability of every ordered pair
    cls = pd.Categorical(cells["pmax_class"], categories=census.PMAX_CLASSES).codes
    pmax = census.PMAX.to_numpy()[np.ix_(cls, cls)]
    is_e = ei == "E"
    sigma = np.where(
        is_e[:, None],
        np.where(is_e[None, :], census.SIGMA_UM["E"]["E"], census.SIGMA_UM["E"]["I"]),
        np.where(is_e[None, :], census.SIGMA_UM["I"]["E"], census.SIGMA_UM["I"]["I"]),
    )
    d = lat[order][:, None, :] - lat[order][None, :, :]
    r2 = (d**2).sum(-1)
    p = pmax * np.exp(-r2 / (2 * sigma**2))
    np.fill_diagonal(p, 0.0)
    connected = rng.random((n, n)) < p
    pre, post = np.nonzero(connected)
    lam = np.where(is_e[pre], census.SYNAPSES_PER_CONNECTION_EXTRA_MEAN["E"],
                   census.SYNAPSES_PER_CONNECTION_EXTRA_MEAN["I"])
    nsyn = 1 + rng.poisson(lam)
    spre, spost = np.repeat(pre, nsyn), np.repeat(post, nsyn)
    m = len(spre)
    mu, sd = census.SYNAPSE_SIZE_LOGNORMAL
    size = np.maximum(1, np.rint(rng.lognormal(mu, sd, size=m))).astype(np.int64)
    ctr = frame_um_to_nm(frame[spost] + rng.normal(0.0, 30.0, size=(m, 3)))
    synapses = pd.DataFrame({
        "id": np.arange(1, m + 1, dtype=np.int64) + 10**8,
        "pre_pt_root_id": root_ids[spre], "post_pt_root_id": root_ids[spost], "size": size,
        "ctr_pt_position_x": ctr[:, 0], "ctr_pt_position_y": ctr[:, 1], "ctr_pt_position_z": ctr[:, 2],
    })
    return SurrogateColumn(cells=cells, synapses=synapses, pair_probability=p)


def cell_tables(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The cell tables (all but synapses) of generated ``cells``, as CAVE would serve them.

    ``cells``: one row per cell with ``nucleus_id, root_id, cell_type, mtype, ei`` and the soma
    position ``x_nm, y_nm, z_nm`` (nm), ``volume_um3``. Proofreading: every cell's dendrite
    extended; an excitatory axon clean (partially extended), an inhibitory one extended.
    """
    c = cells
    pos = {"pt_position_x": c["x_nm"], "pt_position_y": c["y_nm"], "pt_position_z": c["z_nm"]}
    system = np.where(c["ei"] == "I", "aibs_coarse_inhibitory",
                      "aibs_coarse_excitatory")
    ids = np.arange(1, len(c) + 1, dtype=np.int64)
    typed = {"id": ids, "target_id": c["nucleus_id"], "pt_root_id": c["root_id"],
             "classification_system": system, **pos}
    return {
        COLUMN_TABLE: pd.DataFrame({**typed, "cell_type": c["cell_type"]}),
        CELL_TYPE_TABLE: pd.DataFrame({**typed, "cell_type": c["cell_type"]}),
        MTYPE_TABLE: pd.DataFrame({**typed, "cell_type": c["mtype"]}),
        NUCLEUS_TABLE: pd.DataFrame({"id": c["nucleus_id"], "pt_root_id": c["root_id"],
                                     "volume": c["volume_um3"], **pos}),
        PROOFREADING_TABLE: pd.DataFrame({
            "id": ids, "pt_root_id": c["root_id"], "valid_id": c["root_id"],
            "status_dendrite": "extended", "status_axon": np.where(c["ei"] == "E", "clean", "extended"),
            "strategy_dendrite": "dendrite_extended",
            "strategy_axon": np.where(c["ei"] == "E", "axon_partially_extended", "axon_fully_extended"),
        }),
    }


class SurrogateSource(Source):
    """Offline source of a surrogate V1 column (see module docstring). Not MICrONS synapses."""

    kind = "surrogate"
    provenance = "generated"
    namespace = "surrogate"

    def __init__(self, seed: int = 0, bounds: LayerBounds | None = None) -> None:
        self.version = int(seed)
        self.seed = int(seed)
        self.bounds = bounds or LayerBounds()

    @cached_property
    def column(self) -> SurrogateColumn:
        return generate_column(self.seed, self.bounds)

    def fetch_table(self, table: str, *, filter_in: Mapping[str, Sequence] | None = None,
                    progress: bool = True) -> pd.DataFrame:
        tables = cell_tables(self.column.cells)
        if table not in tables:
            raise SourceError(f"surrogate: no table {table!r}; it has {sorted(tables)} and {SYNAPSE_TABLE}")
        return conform(rows_in(tables[table], filter_in), table, origin="surrogate")

    def fetch_synapses(self, root_ids: np.ndarray, *, parts: PartStore | None = None,
                       progress: bool = True) -> pd.DataFrame:
        s = self.column.synapses
        keep = np.isin(s["pre_pt_root_id"], root_ids) & np.isin(s["post_pt_root_id"], root_ids)
        return conform(s[keep], SYNAPSE_TABLE, origin="surrogate")

    def describe(self) -> dict:
        return {
            **super().describe(), "seed": self.seed,
            "note": "surrogate column generated from type-level statistics fitted to the MICrONS V1 column "
                    "(census counts, pmax per type pair, synapses per connection; V1DD sigma); NOT MICrONS synapses",
        }
