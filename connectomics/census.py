"""Published figures embedded in the package (small, cited tables) for the surrogate column.

Sources
-------
CENSUS
    Column m-type counts: the 1,351-neuron V1 column census of Schneider-Mizell et al. (2025,
    Nature, "Inhibitory specificity from a connectomic census of mouse visual cortex"), as
    published with Elabbady et al. 2025 (``AllenInstitute/Perisomatic_Based_CellTyping``,
    ``data/column_radial_truncation_v795.feather``): 1,188 excitatory + 163 inhibitory cells.
    Per-layer excitatory coarse-type counts of the BioNIC paper (Prasanth & Tivnan 2026): 4P 266,
    23P 349, L5 185, L6 383 (1,183). The *joint* (m-type, coarse type, layer) split below is a
    reconstruction, not a published table: m-types ordered by depth are assigned to the coarse
    types ordered by depth so that both marginals hold exactly (e.g. 18 deep L3b cells fall in
    4P, 51 deep L4c cells in 5P-IT); 5P-ET/5P-NP = the L5ET/L5NP m-types; 6P-CT = the L6short
    and L6wm m-types (a judgement); 5 L6wm cells sit in white matter (1,188 - 1,183).
    Inhibitory m-types map to coarse types PTC->BC, DTC->MC, ITC->BPC, STC->NGC; STC/NGC cells
    are put in L1, the others spread over L2/3-L6 in proportion to the excitatory cells there
    (largest remainder). Those layer placements are assumptions.
PMAX, SIGMA_UM
    Connection probability at 0 um lateral distance (pmax) between 19 classes of the Allen
    biorealistic V1 model, "derived from V1DD dataset" (``AllenInstitute/biorealistic-v1-model``
    @741a18d8, ``base_props/pmax_matrix_v1dd.csv``; rows = pre, columns = post), and the
    Gaussian widths sigma (um) per pre/post E/I class (``base_props/sigma.csv``; Campagnola,
    Seeman et al. 2022). p(r) = pmax * exp(-r^2 / (2 sigma^2)), r = lateral (x-z) soma distance.
    Values rounded to 4 significant digits. 2.441e-05 is the source's floor for "none seen".
SYNAPSE_SIZE_LOGNORMAL
    mean and s.d. of ln(synapse size in voxels) over the 9,201 input synapses of three 23P cells
    (``nriedman/microns`` ``sample_dataset/23P_corner_{5,50,95}.csv``, from ``synapses_pni_2``).
SYNAPSES_PER_CONNECTION
    Not a measured figure (none was found): the surrogate draws 1 + Poisson(lambda) synapses per
    connected pair, lambda = 0.5 for excitatory and 2.0 for inhibitory presynaptic cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: (m-type, coarse type, layer, cells)
CENSUS: tuple[tuple[str, str, str, int], ...] = (
    ("L2a", "23P", "L2/3", 57), ("L2b", "23P", "L2/3", 66), ("L2c", "23P", "L2/3", 73),
    ("L3a", "23P", "L2/3", 74), ("L3b", "23P", "L2/3", 79),
    ("L3b", "4P", "L4", 18), ("L4a", "4P", "L4", 66), ("L4b", "4P", "L4", 152), ("L4c", "4P", "L4", 30),
    ("L4c", "5P-IT", "L5", 51), ("L5a", "5P-IT", "L5", 30), ("L5b", "5P-IT", "L5", 44),
    ("L6tall-a", "5P-IT", "L5", 11), ("L5ET", "5P-ET", "L5", 39), ("L5NP", "5P-NP", "L5", 10),
    ("L6tall-a", "6P-IT", "L6", 70), ("L6tall-b", "6P-IT", "L6", 62), ("L6tall-c", "6P-IT", "L6", 105),
    ("L6short-a", "6P-CT", "L6", 69), ("L6short-b", "6P-CT", "L6", 56), ("L6wm", "6P-CT", "L6", 21),
    ("L6wm", "6P-CT", "WM", 5),
    ("STC", "NGC", "L1", 22),
    ("PTC", "BC", "L2/3", 17), ("PTC", "BC", "L4", 13), ("PTC", "BC", "L5", 9), ("PTC", "BC", "L6", 19),
    ("DTC", "MC", "L2/3", 16), ("DTC", "MC", "L4", 12), ("DTC", "MC", "L5", 8), ("DTC", "MC", "L6", 18),
    ("ITC", "BPC", "L2/3", 9), ("ITC", "BPC", "L4", 6), ("ITC", "BPC", "L5", 5), ("ITC", "BPC", "L6", 9),
)

#: Published column m-type counts (Schneider-Mizell et al. 2025 census); CENSUS sums to these.
MTYPE_COUNTS: dict[str, int] = {
    "L2a": 57, "L2b": 66, "L2c": 73, "L3a": 74, "L3b": 97, "L4a": 66, "L4b": 152, "L4c": 81,
    "L5a": 30, "L5b": 44, "L5ET": 39, "L5NP": 10, "L6tall-a": 81, "L6tall-b": 62, "L6tall-c": 105,
    "L6short-a": 69, "L6short-b": 56, "L6wm": 26, "PTC": 58, "DTC": 54, "ITC": 29, "STC": 22,
}

PMAX_CLASSES: tuple[str, ...] = (
    "L1_Inh", "L2/3_Exc", "L2/3_PV", "L2/3_SST", "L2/3_VIP", "L4_Exc", "L4_PV", "L4_SST", "L4_VIP",
    "L5_ET", "L5_IT", "L5_NP", "L5_PV", "L5_SST", "L5_VIP", "L6_Exc", "L6_PV", "L6_SST", "L6_VIP",
)
_F = 2.441e-05
_PMAX_ROWS = (
    (0.2372, 0.1757, 0.1758, 0.09175, 0.1192, 0.01182, 0.02065, 0.01023, 0.07971, 0.1682, 0.05383, 0.01624, 0.004889, 0.002152, 0.008477, 0.01167, 0.00327, _F, _F),  # noqa: E501
    (0.02797, 0.04494, 0.286, 0.294, 0.08926, 0.007134, 0.1796, 0.4027, 0.06009, 0.1026, 0.01907, 0.00522, 0.1135, 0.1779, 0.03121, 0.007417, 0.01275, 0.003497, 0.0009722),  # noqa: E501
    (0.1142, 0.6758, 0.6561, 0.38, 0.2754, 0.07816, 0.2315, 0.2499, 0.06631, 0.3479, 0.1036, 0.03115, 0.1756, 0.1181, 0.03149, 0.0267, 0.0632, 0.03502, 0.004974),  # noqa: E501
    (0.1771, 0.5266, 0.5608, 0.3381, 0.4038, 0.04107, 0.1808, 0.1504, 0.08062, 0.2285, 0.04959, 0.1707, 0.08193, 0.06233, 0.01862, 0.01282, 0.02358, 0.01641, _F),  # noqa: E501
    (0.05954, 0.0883, 0.2117, 0.2618, 0.1943, 0.04559, 0.1342, 0.3488, 0.2491, 0.1791, 0.0916, 0.01613, 0.1125, 0.2083, 0.1712, 0.04009, 0.06536, 0.02577, 0.0286),  # noqa: E501
    (0.004267, 0.01688, 0.06044, 0.0294, 0.03921, 0.03054, 0.3157, 0.3243, 0.08452, 0.07942, 0.0208, 0.002726, 0.1419, 0.1456, 0.0195, 0.01096, 0.02993, 0.01814, 0.001836),  # noqa: E501
    (0.01182, 0.4405, 0.4501, 0.2022, 0.1552, 0.488, 0.6332, 0.3884, 0.1949, 0.3726, 0.1803, 0.01845, 0.276, 0.138, 0.05567, 0.02848, 0.04805, 0.01785, 0.0064),  # noqa: E501
    (0.1426, 0.6652, 0.6428, 0.3555, 0.4544, 0.4768, 0.6422, 0.3895, 0.2839, 0.3597, 0.1456, 0.1904, 0.2929, 0.19, 0.08328, 0.02734, 0.07464, 0.04295, 0.007955),  # noqa: E501
    (_F, 0.006903, 0.05322, 0.03589, 0.04758, 0.009039, 0.1609, 0.4014, 0.2627, 0.0773, 0.03183, 0.1309, 0.2672, 0.5362, 0.1963, 0.019, 0.1203, 0.1634, 0.08399),  # noqa: E501
    (0.01286, 0.006778, 0.04045, 0.03131, 0.01851, 0.002929, 0.03262, 0.04422, 0.0261, 0.03217, 0.01913, 0.01804, 0.1338, 0.1944, 0.01606, 0.005769, 0.02266, 0.01001, 0.003945),  # noqa: E501
    (0.007601, 0.01974, 0.0473, 0.04168, 0.01721, 0.008768, 0.1395, 0.1561, 0.07391, 0.0875, 0.01882, 0.009654, 0.227, 0.2283, 0.05367, 0.01457, 0.05225, 0.01122, 0.01308),  # noqa: E501
    (0.000833, 0.005535, 0.004514, 0.008024, 0.01651, 0.006639, 0.03295, 0.02443, 0.1444, 0.2228, 0.05652, 0.01845, 0.1941, 0.2547, 0.1207, 0.05102, 0.06205, 0.04686, 0.1334),  # noqa: E501
    (0.009503, 0.1536, 0.1492, 0.07292, 0.08669, 0.2758, 0.3976, 0.2706, 0.2003, 0.4717, 0.3299, 0.0881, 0.3491, 0.2034, 0.1101, 0.07773, 0.1104, 0.04285, 0.03934),  # noqa: E501
    (0.1314, 0.4502, 0.362, 0.1842, 0.3147, 0.319, 0.4595, 0.2814, 0.3143, 0.5135, 0.2429, 0.1599, 0.34, 0.2449, 0.1253, 0.07331, 0.101, 0.06532, 0.022),  # noqa: E501
    (0.004494, 0.05779, 0.07087, 0.07481, 0.08592, 0.00702, 0.1045, 0.2089, 0.1499, 0.08796, 0.009774, 0.009748, 0.1382, 0.1681, 0.1042, 0.02831, 0.1336, 0.05352, 0.0356),  # noqa: E501
    (_F, 0.0001898, 0.0008703, 0.0007317, 0.0001132, 0.001414, 0.01105, 0.01301, 0.00879, 0.01265, 0.003189, 0.006137, 0.0311, 0.04797, 0.02916, 0.03244, 0.2281, 0.2328, 0.03783),  # noqa: E501
    (0.002513, 0.01234, 0.005501, 0.007079, 0.005137, 0.01484, 0.0298, 0.01912, 0.0481, 0.08118, 0.05925, 0.06596, 0.08459, 0.03414, 0.08301, 0.4943, 0.4204, 0.1834, 0.1292),  # noqa: E501
    (0.02891, 0.04021, 0.01045, 0.02807, 0.03961, 0.01984, 0.09679, 0.03447, 0.2136, 0.03596, 0.09504, 0.01475, 0.1568, 0.0614, 0.1796, 0.2555, 0.3385, 0.0977, 0.3006),  # noqa: E501
    (_F, 0.001319, _F, _F, _F, 0.0007553, 0.001778, _F, 0.02491, 0.03488, 0.009406, 0.05616, 0.02565, 0.01994, 0.005862, 0.04614, 0.1001, 0.1802, 0.1075),  # noqa: E501
)
#: pmax (pre class x post class), unitless probability at 0 um lateral distance.
PMAX = pd.DataFrame(np.array(_PMAX_ROWS), index=list(PMAX_CLASSES), columns=list(PMAX_CLASSES))

#: Gaussian width sigma in um, indexed [pre E/I][post E/I].
SIGMA_UM: dict[str, dict[str, float]] = {
    "E": {"E": 127.0, "I": 99.84},
    "I": {"E": 96.6, "I": 126.77},
}

SYNAPSE_SIZE_LOGNORMAL: tuple[float, float] = (8.449, 1.098)
SYNAPSES_PER_CONNECTION_EXTRA_MEAN: dict[str, float] = {"E": 0.5, "I": 2.0}

_EXC_CLASS = {"23P": "L2/3_Exc", "4P": "L4_Exc", "5P-IT": "L5_IT", "5P-ET": "L5_ET",
              "5P-NP": "L5_NP", "6P-IT": "L6_Exc", "6P-CT": "L6_Exc"}
_INH_SUFFIX = {"BC": "PV", "MC": "SST", "BPC": "VIP"}
_INH_LAYER = {"L1": "L2/3", "L2/3": "L2/3", "L4": "L4", "L5": "L5", "L6": "L6", "WM": "L6"}


def pmax_class(cell_type: str, layer: str) -> str:
    """The V1DD pmax class of a (coarse type, soma layer) cell, e.g. ("BC", "L4") -> "L4_PV"."""
    if cell_type in _EXC_CLASS:
        return _EXC_CLASS[cell_type]
    if cell_type == "NGC":
        return "L1_Inh"
    if cell_type in _INH_SUFFIX:
        return f"{_INH_LAYER[layer]}_{_INH_SUFFIX[cell_type]}"
    raise KeyError(f"no pmax class for cell type {cell_type!r}")


def census_table() -> pd.DataFrame:
    """CENSUS as a DataFrame with columns mtype, cell_type, layer, n_cells."""
    return pd.DataFrame(CENSUS, columns=["mtype", "cell_type", "layer", "n_cells"])
