"""Streaming aggregation of a synapse table into neuron-level edges.

Synapses come as an iterable of batches (pandas DataFrames, Arrow tables or record batches with
``pre_pt_root_id``, ``post_pt_root_id``, ``size``), e.g. the row groups of a Parquet file read
with only those three columns. Each batch is mapped to node indices with a hash lookup of the root ids
(``pandas.Index.get_indexer``; synapses with an endpoint outside the node set are dropped) and
reduced at once. Neuron-level edges (:class:`EdgeAccumulator`):

* up to :data:`DENSE_MAX_NODES` nodes, into dense (n*n) count and size accumulators
  (``np.bincount``), so memory is fixed whatever the number of synapses;
* above that, per batch into unique pair codes ``pre * n + post`` that are merged as they grow.

The type graph alone (:class:`TypeAccumulator`) needs only a boolean "connected" flag per cell
pair (n*n bytes, up to :data:`FLAG_MAX_NODES` nodes) and per population pair a synapse count and
size sum, which stay in cache. The whole table is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import networkx as nx

from .graph import EDGE_COLUMNS, node_populations, population_edge_table, type_graph_from_table

DENSE_MAX_NODES = 4096
FLAG_MAX_NODES = 16384
SYNAPSE_COLUMNS = ["pre_pt_root_id", "post_pt_root_id", "size"]


def iter_parquet_batches(paths: Iterable[str | Path], batch_rows: int = 4_000_000) -> Iterator[pa.RecordBatch]:
    """Record batches of the three synapse columns from one or more Parquet files."""
    for path in paths:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=SYNAPSE_COLUMNS)


def _columns(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        # zero_copy_only=False: a count-only source stores unknown sizes as nulls -> NaN
        cols = [batch.column(c).to_numpy(zero_copy_only=False) for c in SYNAPSE_COLUMNS]
    else:
        cols = [batch[c].to_numpy() for c in SYNAPSE_COLUMNS]
    return cols[0].astype(np.int64, copy=False), cols[1].astype(np.int64, copy=False), cols[2].astype(np.float64, copy=False)


class EdgeAccumulator:
    """Accumulates synapse batches into (pre, post) -> (count, summed size)."""

    def __init__(self, root_ids: np.ndarray, dense: bool | None = None) -> None:
        """``dense``: dense n*n accumulators (default: up to :data:`DENSE_MAX_NODES` nodes)."""
        self.root_ids = np.asarray(root_ids, dtype=np.int64)
        self.n = len(self.root_ids)
        self.index = pd.Index(self.root_ids)
        if not self.index.is_unique:
            raise ValueError("root ids of the nodes are not unique")
        self.dense = self.n <= DENSE_MAX_NODES if dense is None else dense
        if self.dense:
            self.count = np.zeros(self.n * self.n, dtype=np.int64)
            self.size = np.zeros(self.n * self.n, dtype=np.float64)
        else:
            self._codes: list[np.ndarray] = []
            self._counts: list[np.ndarray] = []
            self._sizes: list[np.ndarray] = []
            self._pending = 0
        self.n_synapses_seen = 0
        self.n_synapses_kept = 0

    def map_batch(self, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pre, post, size) node indices and sizes of the batch's synapses inside the node set."""
        pre_ids, post_ids, size = _columns(batch)
        self.n_synapses_seen += len(pre_ids)
        pre = self.index.get_indexer(pre_ids)
        post = self.index.get_indexer(post_ids)
        ok = (pre >= 0) & (post >= 0)
        if not ok.all():
            pre, post, size = pre[ok], post[ok], size[ok]
        self.n_synapses_kept += len(pre)
        return pre.astype(np.int64, copy=False), post.astype(np.int64, copy=False), size.astype(np.float64, copy=False)

    def add(self, batch) -> None:
        pre, post, size = self.map_batch(batch)
        code = pre * self.n + post
        if self.dense:
            self.count += np.bincount(code, minlength=self.n * self.n)
            self.size += np.bincount(code, weights=size, minlength=self.n * self.n)
            return
        uniq, inv = np.unique(code, return_inverse=True)
        self._codes.append(uniq)
        self._counts.append(np.bincount(inv, minlength=len(uniq)))
        self._sizes.append(np.bincount(inv, weights=size, minlength=len(uniq)))
        self._pending += len(uniq)
        if self._pending > 20_000_000 and len(self._codes) > 1:
            self._merge()

    def _merge(self) -> None:
        codes = np.concatenate(self._codes)
        uniq, inv = np.unique(codes, return_inverse=True)
        self._counts = [np.bincount(inv, weights=np.concatenate(self._counts), minlength=len(uniq)).astype(np.int64)]
        self._sizes = [np.bincount(inv, weights=np.concatenate(self._sizes), minlength=len(uniq))]
        self._codes = [uniq]
        self._pending = len(uniq)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(pre, post, n_synapses, summed_size) of every connected pair, sorted by (pre, post)."""
        if self.dense:
            code = np.flatnonzero(self.count)
            count, size = self.count[code], self.size[code]
        elif self._codes:
            self._merge()
            code, count, size = self._codes[0], self._counts[0], self._sizes[0]
        else:
            code = count = np.zeros(0, np.int64)
            size = np.zeros(0)
        pre, post = np.divmod(code, max(self.n, 1))
        return pre, post, count, size

    def edges(self) -> pd.DataFrame:
        """Edges (columns of :data:`connectomics.graph.EDGE_COLUMNS`) sorted by (pre, post)."""
        pre, post, count, size = self.arrays()
        return pd.DataFrame({
            "pre": pre.astype(np.int64), "post": post.astype(np.int64),
            "pre_root_id": self.root_ids[pre], "post_root_id": self.root_ids[post],
            "n_synapses": count.astype(np.int64), "summed_size": size.astype(np.float64),
        })[list(EDGE_COLUMNS)]


def _feed(acc, batches: Iterable, progress: bool, total: int | None):
    """Add every batch to the accumulator ``acc`` (with a progress bar); return ``acc``."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="syn", unit_scale=True, desc="aggregate", disable=not progress) as bar:
        for b in batches:
            acc.add(b)
            bar.update(len(b))
    return acc


def aggregate_synapses(batches: Iterable, root_ids: np.ndarray, progress: bool = False,
                       total: int | None = None) -> pd.DataFrame:
    """Neuron-level edges of the synapses in ``batches`` between the cells ``root_ids`` (node order)."""
    return _feed(EdgeAccumulator(root_ids), batches, progress, total).edges()


class TypeAccumulator:
    """Accumulates synapse batches straight into population-pair totals (see module docstring)."""

    def __init__(self, nodes: pd.DataFrame) -> None:
        self.nodes = nodes
        n = len(nodes)
        self.flagged = n <= FLAG_MAX_NODES
        # flagged: only the accumulator's id mapping is used, so no dense n*n arrays
        self.edges = EdgeAccumulator(nodes["root_id"].to_numpy(), dense=False if self.flagged else None)
        self.pop, self.names = node_populations(nodes)
        k = len(self.names)
        if self.flagged:
            self.connected = np.zeros(n * n, dtype=bool)
            self.n_syn = np.zeros(k * k, dtype=np.int64)
            self.size = np.zeros(k * k, dtype=np.float64)

    def add(self, batch) -> None:
        if not self.flagged:
            self.edges.add(batch)
            return
        pre, post, size = self.edges.map_batch(batch)
        self.connected[pre * len(self.pop) + post] = True
        k = len(self.names)
        tc = self.pop[pre] * k + self.pop[post]
        self.n_syn += np.bincount(tc, minlength=k * k)
        self.size += np.bincount(tc, weights=size, minlength=k * k)

    def table(self) -> pd.DataFrame:
        """One row per connected population pair (see :func:`population_edge_table`)."""
        if not self.flagged:
            pre, post, count, size = self.edges.arrays()
            return population_edge_table(self.pop, self.names, pre, post, count.astype(float), size)
        k = len(self.names)
        pre, post = np.divmod(np.flatnonzero(self.connected), len(self.pop))
        pairs = np.bincount(self.pop[pre] * k + self.pop[post], minlength=k * k)
        hit = np.flatnonzero(pairs)
        a, b = np.divmod(hit, k)
        names = np.asarray(self.names, dtype=object)
        return pd.DataFrame({
            "pre_population": names[a], "post_population": names[b], "n_synapses": self.n_syn[hit],
            "summed_size": self.size[hit], "connected_pairs": pairs[hit].astype(np.int64),
        })


def aggregate_type_graph(batches: Iterable, nodes: pd.DataFrame, progress: bool = False,
                         total: int | None = None) -> nx.DiGraph:
    """The cell-type/layer graph straight from synapse batches, without a neuron-edge table."""
    return type_graph_from_table(nodes, _feed(TypeAccumulator(nodes), batches, progress, total).table())
