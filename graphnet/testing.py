"""Small synthetic :class:`~connectomics.graph.ConnectomeGraph` s for tests and examples.

Not MICrONS data: cells and synapses are drawn at random from a seed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import pandas as pd

from connectomics.graph import EDGE_COLUMNS, NODE_COLUMNS, ConnectomeGraph

#: A miniature column: (cell type, layer) -> cells. Includes cells of a layer's type outside it
#: (23P in L4) and inhibitory cells, so "type *in that layer*" and graded inhibition matter.
SMALL_COLUMN: dict[tuple[str, str], int] = {
    ("NGC", "L1"): 2,
    ("23P", "L2/3"): 24, ("BC", "L2/3"): 5, ("MC", "L2/3"): 2,
    ("4P", "L4"): 20, ("23P", "L4"): 2, ("BC", "L4"): 4,
    ("5P-IT", "L5"): 8, ("5P-ET", "L5"): 5, ("5P-NP", "L5"): 3, ("MC", "L5"): 3,
    ("6P-IT", "L6"): 10, ("6P-CT", "L6"): 12, ("BPC", "L6"): 2,
}
_I = {"BC", "BPC", "MC", "NGC"}
_DEPTH = {"L1": 50.0, "L2/3": 190.0, "L4": 340.0, "L5": 470.0, "L6": 650.0, "WM": 800.0}


def synthetic_graph(
    populations: Mapping[tuple[str, str], int] | None = None,
    p: float | Mapping[tuple[str, str], float] = 0.15,
    seed: int = 0,
    autapses: bool = False,
) -> ConnectomeGraph:
    """Random neuron-level graph.

    ``populations``: ``{(cell_type, layer): n_cells}`` (default :data:`SMALL_COLUMN`).
    ``p``: connection probability of every ordered pair, or per ``(pre_type, post_type)`` (coarse
    types; missing pairs 0). Each connected pair gets ``1 + Poisson(1.5)`` synapses and a summed
    size of ``n_synapses * LogNormal(6, 0.5)`` voxels.
    """
    rng = np.random.default_rng(seed)
    populations = dict(populations or SMALL_COLUMN)
    rows = []
    for (ct, layer), n in populations.items():
        for _ in range(int(n)):
            rows.append({"cell_type": ct, "mtype": ct, "layer": layer,
                         "ei": "I" if ct in _I else "E"})
    nodes = pd.DataFrame(rows)
    n = len(nodes)
    nodes["root_id"] = np.arange(n, dtype=np.int64) + 864691135000000000
    nodes["nucleus_id"] = np.arange(n, dtype=np.int64) + 100
    nodes["x_nm"] = rng.uniform(0, 1e5, n)
    nodes["z_nm"] = rng.uniform(0, 1e5, n)
    nodes["depth_um"] = nodes["layer"].map(_DEPTH).to_numpy() + rng.uniform(-20, 20, n)
    nodes["y_nm"] = nodes["depth_um"] * 1000.0
    ct = nodes["cell_type"].to_numpy()
    if isinstance(p, Mapping):
        P = np.array([[p.get((a, b), 0.0) for b in ct] for a in ct])
    else:
        P = np.full((n, n), float(p))
    if not autapses:
        np.fill_diagonal(P, 0.0)
    pre, post = np.nonzero(rng.random((n, n)) < P)
    nsyn = 1 + rng.poisson(1.5, len(pre))
    edges = pd.DataFrame({
        "pre": pre.astype(np.int64), "post": post.astype(np.int64),
        "pre_root_id": nodes["root_id"].to_numpy()[pre],
        "post_root_id": nodes["root_id"].to_numpy()[post],
        "n_synapses": nsyn.astype(np.int64),
        "summed_size": nsyn * rng.lognormal(6.0, 0.5, len(pre)),
    })
    # the fields in the order a saved graph has them, so the checksum survives a save and load
    return ConnectomeGraph(nodes=nodes[list(NODE_COLUMNS)], edges=edges[list(EDGE_COLUMNS)],
                           meta={"source": "synthetic", "seed": seed})


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore. Tiny layers are faster single-threaded,
    and much faster on a loaded machine (no OpenMP barrier waits)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
