"""Graded inhibition: each cell's inhibitory input from the connectome, and the gain it sets.

The column's inhibitory cells are not units of the feedforward column; they act through
:class:`GradedInhibition`, a fixed per-cell gain computed from :func:`inhibitory_input` (a
neuron-level graph) or :func:`population_inhibitory_input` (a type-level graph)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

    from connectomics.graph import ConnectomeGraph


def inhibitory_input(
    graph: "ConnectomeGraph",
    cells: Sequence[int] | np.ndarray,
    measure: str = "n_synapses",
    min_synapses: int = 1,
) -> np.ndarray:
    """Inhibitory input of each of ``cells`` (node indices) from the whole graph.

    ``measure="n_synapses"``: synapses onto the cell from inhibitory (``ei == "I"``) cells;
    ``"connections"``: number of inhibitory presynaptic cells. Only pairs with at least
    ``min_synapses`` synapses count. Returns ``(len(cells),)`` float64.
    """
    cells = np.asarray(cells, dtype=np.int64)
    e = graph.edges
    is_i = (graph.nodes["ei"].to_numpy() == "I")
    pre = e["pre"].to_numpy()
    keep = is_i[pre] & (e["n_synapses"].to_numpy() >= min_synapses)
    post = e["post"].to_numpy()[keep]
    if measure == "n_synapses":
        w = e["n_synapses"].to_numpy()[keep].astype(np.float64)
    elif measure == "connections":
        w = np.ones(int(keep.sum()))
    else:
        raise ValueError(f"measure={measure!r}; choose 'n_synapses' or 'connections'")
    per_node = np.bincount(post, weights=w, minlength=graph.n_nodes)
    return per_node[cells]


def population_inhibitory_input(type_graph: "nx.DiGraph", population: str,
                                measure: str = "n_synapses") -> float:
    """Inhibitory input of one cell of ``population`` from a type-level graph (the mean over the
    population, as :func:`inhibitory_input` gives per cell of a neuron-level graph).

    ``measure="n_synapses"``: synapses from inhibitory populations per cell of ``population``;
    ``"connections"``: expected inhibitory presynaptic cells (connection probability times the
    presynaptic population's cells other than the cell itself, summed).
    """
    if measure not in ("n_synapses", "connections"):
        raise ValueError(f"measure={measure!r}; choose 'n_synapses' or 'connections'")
    n = type_graph.nodes[population]["n_cells"]
    c = 0.0
    for q in type_graph.predecessors(population):
        if type_graph.nodes[q]["ei"] != "I":
            continue
        ed = type_graph.edges[q, population]
        if measure == "n_synapses":
            c += ed["n_synapses"] / n
        else:  # presynaptic candidates: the other cells of q (no autapse within a population)
            c += ed["connection_probability"] * (type_graph.nodes[q]["n_cells"] - (q == population))
    return c


class GradedInhibition(nn.Module):
    r"""Scale each neuron's activity down by its normalised inhibitory input from the graph.

    .. math::
        h_i \leftarrow g_i \, h_i, \qquad g_i = 1 - \alpha \, \iota_i, \qquad
        \iota_i = \frac{c_i}{\max_{k \in \text{layer}} c_k} \in [0, 1]

    with :math:`c_i` the inhibitory input of cell :math:`i` (inhibitory synapses onto it, or
    inhibitory presynaptic cells; :func:`inhibitory_input`) and :math:`\alpha \in [0, 1]` the
    strength: the most inhibited cell of a layer keeps :math:`1 - \alpha` of its activity, a cell
    without inhibitory input all of it (:math:`\iota = 0` everywhere when no cell has any). The gain
    is a fixed buffer: inhibitory cells are not units of the network, they act through it.

    Args:
        inhibitory_input: ``(n,)`` non-negative inhibitory input :math:`c` per neuron.
        strength: :math:`\alpha`.

    Shapes:
        - **input:** :math:`(*, n)`
        - **output:** :math:`(*, n)`
    """

    def __init__(self, inhibitory_input: Tensor | np.ndarray, strength: float = 0.5) -> None:
        super().__init__()
        c = torch.as_tensor(np.asarray(inhibitory_input, dtype=np.float64)).to(torch.get_default_dtype())
        if c.ndim != 1 or bool((c < 0).any()):
            raise ValueError("inhibitory_input must be a non-negative 1-D vector")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = float(strength)
        self.register_buffer("inhibitory_input", c)
        self.register_buffer("gain", torch.empty_like(c))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        c = self.inhibitory_input
        m = c.max() if c.numel() else c.new_zeros(())
        iota = c / m if float(m) > 0 else torch.zeros_like(c)
        self.gain.copy_(1.0 - self.strength * iota)

    @property
    def iota(self) -> Tensor:
        return (1.0 - self.gain) / self.strength if self.strength > 0 else torch.zeros_like(self.gain)

    def forward(self, h: Tensor) -> Tensor:
        # h: (*, n) -> (*, n)
        return h * self.gain

    def extra_repr(self) -> str:
        return (f"n={self.gain.numel()}, strength={self.strength}, "
                f"gain=[{float(self.gain.min()) if self.gain.numel() else 1:.3f}, "
                f"{float(self.gain.max()) if self.gain.numel() else 1:.3f}]")
