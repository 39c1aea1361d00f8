"""connectomics: MICrONS tables -> cell types and layers -> neuron-level and cell-type graphs."""

from .graph import ConnectomeGraph, load_graph, population_key, type_graph

__all__ = ["ConnectomeGraph", "load_graph", "population_key", "type_graph"]
