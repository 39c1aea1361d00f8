"""graphnet: compile connectome graphs into PyTorch modules (masked / sparse layers, inhibition,
plasticity, null models)."""

from .backend import CROSSOVER, choose_backend, crossover_density
from .column import ColumnLayer, CorticalColumn, compile_column
from .plan import LayerPlan, ProjectionPlan, plan_column
from .inhibition import GradedInhibition, inhibitory_input
from .masked_linear import MaskedLinear
from .projection import init_edge_weights
from .null_models import (MATCHED_NULL_MODELS, NULL_MODELS, block_random, degree_shuffle,
                          label_shuffle, random_graph, weight_shuffle)
from .plasticity import HebbianRule
from .sparse_linear import SparseLinear
from .spec import ColumnSpec, LayerSpec, chain

__all__ = [
    "ColumnSpec", "LayerSpec", "chain", "compile_column", "plan_column", "CorticalColumn", "ColumnLayer",
    "LayerPlan", "ProjectionPlan", "MaskedLinear", "SparseLinear", "init_edge_weights", "GradedInhibition",
    "inhibitory_input", "HebbianRule", "random_graph", "degree_shuffle",
    "label_shuffle", "block_random", "weight_shuffle", "NULL_MODELS", "MATCHED_NULL_MODELS", "choose_backend", "crossover_density", "CROSSOVER",
]
