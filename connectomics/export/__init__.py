"""Exports of a neuron-level graph to the field's own tools.

* :func:`to_sonata` (:mod:`.sonata`): a SONATA circuit (``nodes.h5``, ``edges.h5``, node and edge
  type CSVs, ``circuit_config.json``) for simulators (BMTK, NEST, NEURON, Arbor; read by libsonata).
* :func:`neuroglancer_state` (:mod:`.neuroglancer`): a Neuroglancer state (URL and JSON) showing
  selected cells in the minnie65 public segmentation, built with ``nglui``.
"""

from .neuroglancer import NeuroglancerState, neuroglancer_state, select_cells
from .sonata import SonataExport, to_sonata

__all__ = ["NeuroglancerState", "SonataExport", "neuroglancer_state", "select_cells", "to_sonata"]
