"""Cortical layers from soma depth in the minnie65 pia-to-white-matter frame.

Positions are CAVE coordinates in nanometres (``desired_resolution=[1, 1, 1]``). They are taken to
the ``standard-transform`` minnie65 frame (rotation of 5 deg about z, pia translated to y = 0,
micrometres), where depth = transformed y. Layer boundaries (um of depth) default to those of the
CAVEconnectome dash-connectivity-viewer minnie65 config:

    L1 [0, 106) | L2/3 [106, 276) | L4 [276, 411) | L5 [411, 535) | L6 [535, 768) | WM >= 768

Somata above the pia (depth < 0) are put in L1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LAYERS: tuple[str, ...] = ("L1", "L2/3", "L4", "L5", "L6", "WM")


@dataclass(frozen=True)
class LayerBounds:
    """Upper boundaries (um of depth) of L1, L2/3, L4, L5, L6; deeper is white matter."""

    bounds_um: tuple[float, ...] = (106.0, 276.0, 411.0, 535.0, 768.0)
    names: tuple[str, ...] = field(default=LAYERS)

    def __post_init__(self) -> None:
        b = np.asarray(self.bounds_um, dtype=float)
        if len(self.names) != len(b) + 1:
            raise ValueError(f"{len(b)} boundaries need {len(b) + 1} layer names, got {len(self.names)}")
        if not np.all(np.diff(b) > 0):
            raise ValueError(f"layer boundaries must increase strictly: {self.bounds_um}")

    def assign(self, depth_um: np.ndarray) -> np.ndarray:
        """Layer name per depth; depth (n,) in um -> (n,) object array of names."""
        depth_um = np.asarray(depth_um, dtype=float)
        if np.isnan(depth_um).any():
            raise ValueError("NaN depth: cannot assign a layer")
        idx = np.searchsorted(np.asarray(self.bounds_um), depth_um, side="right")
        return np.asarray(self.names, dtype=object)[idx]

    def range_of(self, layer: str) -> tuple[float, float]:
        """(top, bottom) depth of a layer in um; WM ends 300 um below the last boundary."""
        i = self.names.index(layer)
        edges = (0.0, *self.bounds_um, self.bounds_um[-1] + 300.0)
        return float(edges[i]), float(edges[i + 1])


def _transform():
    import standard_transform

    return standard_transform.minnie_transform(resolution="nm")


def nm_to_frame_um(xyz_nm: np.ndarray) -> np.ndarray:
    """CAVE positions (n, 3) in nm -> (n, 3) um in the minnie65 frame; column 1 is depth."""
    xyz_nm = np.asarray(xyz_nm, dtype=float).reshape(-1, 3)
    return np.asarray(_transform().apply(xyz_nm), dtype=float)


def frame_um_to_nm(xyz_um: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nm_to_frame_um`: frame um (n, 3) -> CAVE nm (n, 3)."""
    xyz_um = np.asarray(xyz_um, dtype=float).reshape(-1, 3)
    return np.asarray(_transform().invert(xyz_um), dtype=float)


def depth_um(xyz_nm: np.ndarray) -> np.ndarray:
    """Soma depth below the pia in um, (n, 3) nm -> (n,)."""
    return nm_to_frame_um(xyz_nm)[:, 1]
