"""graphnet: compile connectome graphs into PyTorch modules (masked / sparse layers, inhibition,
plasticity, null models)."""

from .backend import CROSSOVER, choose_backend, crossover_density
from .column import ColumnLayer, CorticalColumn, compile_column, plan_column
from .inhibition import (FastLateralInhibition2d, GradedInhibition, LateralInhibition2d,
                         inhibitory_input)
from .masked_linear import MaskedLinear
from .projection import init_edge_weights
from .null_models import NULL_MODELS, degree_shuffle, label_shuffle, random_graph
from .plasticity import HebbianRule
from .sparse_linear import SparseLinear
from .spec import ColumnSpec, LayerSpec, chain

__all__ = [
    "ColumnSpec", "LayerSpec", "chain", "compile_column", "plan_column", "CorticalColumn", "ColumnLayer",
    "MaskedLinear", "SparseLinear", "init_edge_weights", "GradedInhibition",
    "LateralInhibition2d", "FastLateralInhibition2d", "inhibitory_input", "HebbianRule", "random_graph", "degree_shuffle",
    "label_shuffle", "NULL_MODELS", "choose_backend", "crossover_density", "CROSSOVER",
]
