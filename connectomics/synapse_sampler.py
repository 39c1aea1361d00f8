"""Synapses drawn by the surrogate's distance rule, for any set of cells. NOT MICrONS synapses.

The rule of the column surrogate (:mod:`connectomics.sources.surrogate`): pair (i, j), i != j, is
connected with p = pmax[c_i, c_j] * exp(-r^2 / (2 sigma[e_i, e_j]^2)) (pmax by class, sigma by
E/I: :mod:`connectomics.census`; r the lateral x-z soma distance in the minnie65 frame), a
connected pair gets 1 + Poisson(lambda_pre) synapses of lognormal size placed N(0, 30 um)
around the postsynaptic soma. :class:`SynapseSampler` draws them for blocks of pre cells (never
an n x n matrix: one ``chunk_rows`` x n slab at a time), and **each pre cell draws from its own
generator** ``SeedSequence([seed, 2, i])`` (i = node index, cells sorted by root id), so the
synapse table depends only on the seed and the cells, not on block size or processing order.
p is computed in float32 (exponent floored at -60) and drawn as ``u >= fl32(1 - p)`` with u a
float32 uniform, which resolves p to 2^-24 (about 6e-8) by rounding: pairs whose p is below
about 3e-8 (far apart) are never connected. Synapse ids are ``(i + 1) * 2**24 + k`` (k-th
synapse of pre cell i). Used by the ``volume`` source (:mod:`connectomics.sources.volume`),
which writes one partition per block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import census
from .layers import frame_um_to_nm
from .schema import SYNAPSE_TABLE, empty

SYNAPSE_SCATTER_UM = 30.0
#: pre cells per partition, and per (chunk_rows x n) slab inside one
PARTITION_CELLS = 512
CHUNK_ROWS = 32
EXPONENT_FLOOR = -60.0
#: the random stream of the synapses (``SeedSequence([seed, STREAM_SYNAPSES, i])``); the
#: volume's cells draw from streams 0 and 1
STREAM_SYNAPSES = 2


@dataclass
class SynapseSampler:
    """Draws the synapses of blocks of pre cells (everything a Dask worker needs: small arrays).

    ``partition(b)`` is the ``synapses_pni_2`` table of pre cells ``b*partition_cells ...``;
    it depends only on ``seed`` and the cells (see the module docstring).
    """

    seed: int
    root_ids: np.ndarray          # (n,) int64, node order
    frame_um: np.ndarray          # (n, 3) float64, minnie65 frame (x, depth, z)
    pmax_class: np.ndarray        # (n,) int codes into census.PMAX_CLASSES
    is_e: np.ndarray              # (n,) bool
    partition_cells: int = PARTITION_CELLS
    chunk_rows: int = CHUNK_ROWS
    _lat: np.ndarray = field(init=False, repr=False)
    _pmax_post: np.ndarray = field(init=False, repr=False)
    _neg_inv_post: np.ndarray = field(init=False, repr=False)

    @classmethod
    def from_cells(cls, cells: pd.DataFrame, seed: int, **kw) -> "SynapseSampler":
        return cls(
            seed=int(seed), root_ids=cells["root_id"].to_numpy(np.int64),
            frame_um=cells[["fx_um", "fy_um", "fz_um"]].to_numpy(float),
            pmax_class=pd.Categorical(cells["pmax_class"], categories=census.PMAX_CLASSES).codes.astype(np.int64),
            is_e=(cells["ei"] == "E").to_numpy(), **kw)

    def __post_init__(self) -> None:
        if (self.pmax_class < 0).any():
            raise ValueError("a cell has no pmax class")
        self._lat = np.ascontiguousarray(self.frame_um[:, [0, 2]], dtype=np.float32)
        # pmax of every pre class onto each post cell: (n_classes, n)
        self._pmax_post = census.PMAX.to_numpy()[:, self.pmax_class].astype(np.float32)
        s = census.SIGMA_UM
        # -1 / (2 sigma^2) of an E (row 0) or I (row 1) pre cell onto each post cell: (2, n)
        inv = np.array([[s["E"]["E"], s["E"]["I"]], [s["I"]["E"], s["I"]["I"]]]) ** -2 / -2.0
        self._neg_inv_post = inv[:, np.where(self.is_e, 0, 1)].astype(np.float32)
        lam = census.SYNAPSES_PER_CONNECTION_EXTRA_MEAN
        self._lam = np.where(self.is_e, lam["E"], lam["I"])

    @property
    def n(self) -> int:
        return len(self.root_ids)

    @property
    def n_partitions(self) -> int:
        return max(1, -(-self.n // self.partition_cells))

    def rows_of(self, b: int) -> range:
        return range(b * self.partition_cells, min(self.n, (b + 1) * self.partition_cells))

    def pair_probability(self, rows: np.ndarray) -> np.ndarray:
        """p of pre cells ``rows`` onto every cell, (len(rows), n) float32 (diagonal 0)."""
        rows = np.asarray(rows, dtype=np.int64)
        lat = self._lat
        dx = lat[rows, 0, None] - lat[None, :, 0]
        dz = lat[rows, 1, None] - lat[None, :, 1]
        dx *= dx
        dz *= dz
        dx += dz                                          # r^2
        dx *= self._neg_inv_post[np.where(self.is_e[rows], 0, 1)]
        np.maximum(dx, EXPONENT_FLOOR, out=dx)
        np.exp(dx, out=dx)
        dx *= self._pmax_post[self.pmax_class[rows]]
        dx[np.arange(len(rows)), rows] = 0.0
        return dx

    def generator(self, i: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, STREAM_SYNAPSES, int(i)])))

    def partition(self, b: int) -> pd.DataFrame:
        """The synapses of partition ``b`` in the ``synapses_pni_2`` schema, sorted by id."""
        rows = self.rows_of(b)
        u = np.empty((min(self.chunk_rows, len(rows)), self.n), dtype=np.float32)
        mu, sd = census.SYNAPSE_SIZE_LOGNORMAL
        out_pre, out_post, out_id, out_size, out_noise = [], [], [], [], []
        for c0 in range(rows.start, rows.stop, self.chunk_rows):
            chunk = np.arange(c0, min(rows.stop, c0 + self.chunk_rows))
            q = self.pair_probability(chunk)
            np.subtract(np.float32(1.0), q, out=q)        # connect iff u >= fl32(1 - p)
            gens = [self.generator(i) for i in chunk]
            for k, g in enumerate(gens):
                g.random(out=u[k], dtype=np.float32)
            hit = u[: len(chunk)] >= q
            for k, (i, g) in enumerate(zip(chunk, gens)):
                post = np.flatnonzero(hit[k])
                nsyn = 1 + g.poisson(self._lam[i], size=len(post))
                m = int(nsyn.sum())
                out_pre.append(np.full(m, i, dtype=np.int64))
                out_post.append(np.repeat(post, nsyn))
                out_id.append((np.int64(i) + 1) * (1 << 24) + np.arange(m, dtype=np.int64))
                out_size.append(g.lognormal(mu, sd, size=m))
                out_noise.append(g.normal(0.0, SYNAPSE_SCATTER_UM, size=(m, 3)))
        if not out_pre:
            return empty(SYNAPSE_TABLE)
        pre, post = np.concatenate(out_pre), np.concatenate(out_post)
        size = np.maximum(1, np.rint(np.concatenate(out_size))).astype(np.int64)
        ctr = frame_um_to_nm(self.frame_um[post] + np.concatenate(out_noise)) if len(post) else np.zeros((0, 3))
        return pd.DataFrame({
            "id": np.concatenate(out_id), "pre_pt_root_id": self.root_ids[pre],
            "post_pt_root_id": self.root_ids[post], "size": size,
            "ctr_pt_position_x": ctr[:, 0], "ctr_pt_position_y": ctr[:, 1], "ctr_pt_position_z": ctr[:, 2],
        })
