"""Build the graphs from partitioned Parquet synapses with a ``local`` or a ``dask`` engine.

``local``
    :func:`connectomics.aggregate.aggregate_synapses` over the files' record batches, in this
    process (the single-machine engine).
``dask``
    ``dask.dataframe.read_parquet`` of the files (pre, post, size only), ``map_partitions`` of
    the same per-batch reduction (:class:`PartialEdges`, an :class:`~connectomics.aggregate.EdgeAccumulator`
    in its pair-code mode: one row per connected pair of the partition with its synapse count
    and summed size), then a tree reduce (fan-in ``split_every``, default 16) that merges
    partials with the accumulator's own merge; the last partial (24 bytes a pair) comes back and
    the edge table is built here. The node root ids travel once per worker (one graph key). Without
    a scheduler address a ``LocalCluster`` is started (and closed) here; with ``--scheduler
    ADDRESS`` the workers must import ``connectomics`` and see the same files (shared file
    system).

Both engines give the same neuron-level edges, bit for bit (sorted by (pre, post); counts are
integers and summed sizes are sums of integer sizes, exact in float64 whatever the order), and the
cell-type/layer graph is computed from them by :func:`connectomics.graph.type_graph` in both.

The whole build (tables -> cells -> graphs on disk) is :func:`connectomics.build.build_graph`
with ``engine="local"`` or ``"dask"``, for every source: the ``volume`` source's tables are
partitioned synapse files (generated on the Dask workers too with ``dask``), any other source's
its single ``synapses_pni_2.parquet``.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from .aggregate import SYNAPSE_COLUMNS, EdgeAccumulator, aggregate_synapses, iter_parquet_batches

ENGINES = ("local", "dask")
PARTIAL_COLUMNS = {"code": "int64", "n_synapses": "int64", "summed_size": "float64"}
SPLIT_EVERY = 16


class PartialEdges(EdgeAccumulator):
    """An :class:`EdgeAccumulator` always in its sparse pair-code mode (whatever the number of
    nodes), whose state is a small frame: ``code = pre * n + post, n_synapses, summed_size``."""

    def __init__(self, root_ids: np.ndarray) -> None:
        super().__init__(root_ids, dense=False)

    def _merge(self) -> None:
        # every part (one batch's np.unique, a partial frame, a merge) is already sorted and unique
        if len(self._codes) > 1:
            super()._merge()

    def add_partial(self, frame: pd.DataFrame) -> None:
        """Merge in another partial (a frame of :data:`PARTIAL_COLUMNS`)."""
        if not len(frame):
            return
        self._codes.append(frame["code"].to_numpy(np.int64))
        self._counts.append(frame["n_synapses"].to_numpy(np.int64))
        self._sizes.append(frame["summed_size"].to_numpy(np.float64))
        self._pending += len(frame)

    def frame(self) -> pd.DataFrame:
        """The state as one row per connected pair, sorted by code."""
        if self._codes:
            self._merge()
            code, count, size = self._codes[0], self._counts[0], self._sizes[0]
        else:
            code = count = np.zeros(0, np.int64)
            size = np.zeros(0)
        return pd.DataFrame({"code": code.astype(np.int64), "n_synapses": count.astype(np.int64),
                             "summed_size": size.astype(np.float64)})


def partial_edges(synapses: pd.DataFrame, root_ids: np.ndarray) -> pd.DataFrame:
    """Per-partition reduction: the partition's synapses -> one row per connected pair."""
    acc = PartialEdges(root_ids)
    if len(synapses):
        acc.add(synapses)
    return acc.frame()


def merge_partials(root_ids: np.ndarray, *frames: pd.DataFrame) -> pd.DataFrame:
    """Tree-reduce step: several partials -> one (pairs summed)."""
    acc = PartialEdges(root_ids)
    for f in frames:
        acc.add_partial(f)
    return acc.frame()


def edges_from_partial(frame: pd.DataFrame, root_ids: np.ndarray) -> pd.DataFrame:
    """The final partial as the edge table of :data:`connectomics.graph.EDGE_COLUMNS`."""
    acc = PartialEdges(root_ids)
    acc.add_partial(frame)
    return acc.edges()


# ------------------------------------------------------------------------------------------------
# engines
# ------------------------------------------------------------------------------------------------
def aggregate_local(files: Sequence[str | Path], root_ids: np.ndarray, progress: bool = False) -> pd.DataFrame:
    """Neuron-level edges with the single-machine streaming engine."""
    return aggregate_synapses(iter_parquet_batches(files), root_ids, progress=progress)


def aggregate_dask(files: Sequence[str | Path], root_ids: np.ndarray, client=None,
                   split_every: int = SPLIT_EVERY) -> pd.DataFrame:
    """Neuron-level edges as a Dask job (module docstring). ``client``: a ``distributed.Client``,
    else dask's current scheduler."""
    import dask
    import dask.dataframe as dd

    root_ids = np.asarray(root_ids, dtype=np.int64)
    ddf = dd.read_parquet([str(f) for f in files], columns=list(SYNAPSE_COLUMNS))
    roots = dask.delayed(root_ids, name=f"node-root-ids-{dask.base.tokenize(root_ids)}")
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in PARTIAL_COLUMNS.items()})
    level = ddf.map_partitions(partial_edges, roots, meta=meta).to_delayed()
    merge = dask.delayed(merge_partials, pure=True)
    while len(level) > 1:
        level = [merge(roots, *level[i:i + split_every]) for i in range(0, len(level), split_every)]
    final = level[0]    # the merged partial (24 bytes a pair) comes back; edges are built here
    frame = client.compute(final).result() if client is not None else final.compute()
    return edges_from_partial(frame, root_ids)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                processes: bool = True, **cluster_kw) -> Iterator:
    """A ``distributed.Client`` on ``scheduler`` (address), else on a new ``LocalCluster``
    (closed on exit; no dashboard)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    cluster_kw.setdefault("dashboard_address", None)
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes,
                      **cluster_kw) as cluster, Client(cluster) as client:
        yield client


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if os.uname().sysname != "Darwin" else r / 2**20
