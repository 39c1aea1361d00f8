"""Figures embedded in the package for the surrogate column (small, cited tables).

The surrogate is a *generator*: it draws a column (or, with :mod:`connectomics.sources.volume`, a whole
volume) from type-level statistics. Since the real MICrONS V1 column ships with the package, those
statistics are fitted to it (``scripts/fit_surrogate.py`` writes ``connectomics/data/surrogate/``);
the published V1DD table is kept as :data:`V1DD_PMAX`, to compare the fitted figures with.

Sources
-------
CENSUS (``data/surrogate/census.csv``)
    Joint (m-type, coarse type, layer) counts of the 1,351 proofread neurons of the MICrONS V1
    column (Schneider-Mizell et al. 2025, Nature; MICrONS Consortium 2025, Nature): coarse types of
    the AIBS metamodel, column m-types, layer from soma depth (:mod:`connectomics.layers`).
    1,188 excitatory + 163 inhibitory cells; the BioNIC paper's layer widths by type: 4P 266,
    23P 349, 5P-IT/ET/NP 185, 6P-IT/CT/U + WM-P 383.
PMAX (``data/surrogate/pmax_by_type.csv``)
    Connection probability at 0 um lateral distance per (pre type, post type), fitted so that the
    surrogate's rule p(r) = pmax * exp(-r^2 / (2 sigma^2)) (r = lateral soma distance, somata
    uniform in a 100 x 100 um square) reproduces the real column's type-level connection
    probability in expectation: pmax = p_observed / E[exp(-r^2 / 2 sigma^2)], at most 1.
SIGMA_UM
    Gaussian widths sigma (um) per pre/post E/I class of the Allen biorealistic V1 model
    (``AllenInstitute/biorealistic-v1-model`` @741a18d8, ``base_props/sigma.csv``; Campagnola,
    Seeman et al. 2022). The real column is too narrow (100 um) to fit them.
SYNAPSES_PER_CONNECTION_EXTRA_MEAN (``data/surrogate/synapses_per_connection.csv``)
    A connected pair gets 1 + Poisson(lambda) synapses, lambda = the real column's mean synapses
    per connected pair minus 1, per presynaptic E/I class (E 1.34, I 2.68).
SYNAPSE_SIZE_LOGNORMAL
    mean and s.d. of ln(synapse size in voxels) over the 9,201 input synapses of three 23P cells
    (``nriedman/microns`` ``sample_dataset/23P_corner_{5,50,95}.csv``, from ``synapses_pni_2``).
    The real column's matrix has no synapse sizes.
V1DD_PMAX
    The published pmax between 19 classes of the Allen biorealistic V1 model, "derived from V1DD
    dataset" (``base_props/pmax_matrix_v1dd.csv``; rows = pre, columns = post), 4 significant
    digits; 2.441e-05 is the source's floor for "none seen". Cells map to classes by
    :func:`v1dd_pmax_class`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pathlib import Path

from .cell_types import CELL_TYPE_ALIASES

DATA = Path(__file__).resolve().parent / "data" / "surrogate"

#: Lateral width (um) of the column's square footprint in the surrogate (the column is 100 um wide).
COLUMN_WIDTH_UM = 100.0


def _read(name: str) -> pd.DataFrame:
    path = DATA / name
    try:
        return pd.read_csv(path, keep_default_na=False, na_values=[])
    except OSError as e:  # a broken install, not a user error
        raise RuntimeError(f"packaged table {path} is unreadable ({e}); reinstall the package") from None


_CENSUS = _read("census.csv")
#: (m-type, coarse type, layer, cells) of the real column.
CENSUS: tuple[tuple[str, str, str, int], ...] = tuple(
    (str(m), str(t), str(l), int(n)) for m, t, l, n in _CENSUS[["mtype", "cell_type", "layer", "n_cells"]].itertuples(index=False)
)
#: Column m-type counts; CENSUS sums to these.
MTYPE_COUNTS: dict[str, int] = {str(k): int(v) for k, v in _CENSUS.groupby("mtype")["n_cells"].sum().items()}

_FIT = _read("pmax_by_type.csv")
#: Surrogate connection classes: the real column's coarse types.
PMAX_CLASSES: tuple[str, ...] = tuple(sorted(set(_FIT["pre_type"])))
#: Fitted pmax (pre type x post type), unitless probability at 0 um lateral distance.
PMAX = _FIT.pivot(index="pre_type", columns="post_type", values="pmax").loc[list(PMAX_CLASSES), list(PMAX_CLASSES)]
#: The real column's type-level connection probability (pre type x post type) that PMAX reproduces.
P_OBSERVED = _FIT.pivot(index="pre_type", columns="post_type", values="p_observed").loc[
    list(PMAX_CLASSES), list(PMAX_CLASSES)]

#: Other spellings of the same type (MICrONS tables call layer-5 pyramidal-tract cells both).
TYPE_ALIASES: dict[str, str] = CELL_TYPE_ALIASES


def pmax_class(cell_type: str, layer: str | None = None) -> str:
    """The surrogate connection class of a cell: its coarse type (``layer`` is not used; kept so
    callers need not know which table is in force). Raises KeyError for a type the fit lacks."""
    cls = TYPE_ALIASES.get(cell_type, cell_type)
    if cls not in PMAX.index:
        raise KeyError(f"no fitted pmax for cell type {cell_type!r}; fitted types: {', '.join(PMAX_CLASSES)}")
    return cls


V1DD_PMAX_CLASSES: tuple[str, ...] = (
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
#: Published V1DD pmax (pre class x post class), unitless probability at 0 um lateral distance.
V1DD_PMAX = pd.DataFrame(np.array(_PMAX_ROWS), index=list(V1DD_PMAX_CLASSES), columns=list(V1DD_PMAX_CLASSES))

#: Gaussian width sigma in um, indexed [pre E/I][post E/I].
SIGMA_UM: dict[str, dict[str, float]] = {
    "E": {"E": 127.0, "I": 99.84},
    "I": {"E": 96.6, "I": 126.77},
}

SYNAPSE_SIZE_LOGNORMAL: tuple[float, float] = (8.449, 1.098)
_SPC = _read("synapses_per_connection.csv")
#: lambda of the 1 + Poisson(lambda) synapses per connected pair, by presynaptic E/I class.
SYNAPSES_PER_CONNECTION_EXTRA_MEAN: dict[str, float] = {
    str(e): round(float(m) - 1.0, 6) for e, m in _SPC[["pre_ei", "mean_per_connection"]].itertuples(index=False)}

_EXC_CLASS = {"23P": "L2/3_Exc", "4P": "L4_Exc", "5P-IT": "L5_IT", "5P-ET": "L5_ET", "5P-PT": "L5_ET",
              "5P-NP": "L5_NP", "6P-IT": "L6_Exc", "6P-CT": "L6_Exc", "6P-U": "L6_Exc", "WM-P": "L6_Exc"}
_INH_SUFFIX = {"BC": "PV", "MC": "SST", "BPC": "VIP"}
_INH_LAYER = {"L1": "L2/3", "L2/3": "L2/3", "L4": "L4", "L5": "L5", "L6": "L6", "WM": "L6"}


def v1dd_pmax_class(cell_type: str, layer: str) -> str:
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
