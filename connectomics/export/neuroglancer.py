"""Neuroglancer states showing a graph's cells in the minnie65 EM, built with ``nglui``.

``neuroglancer_state(graph, population="4P|L4")`` (or ``types=[...]`` or ``ids=[root ids]``) gives
a :class:`NeuroglancerState`: the state's JSON and a URL that encodes it (Neuroglancer's own
``#!<json>`` form, no link shortener, so nothing touches the network). The state has

* an image layer ``em``: the minnie65 EM (:data:`MINNIE65_IMAGE_SOURCE`);
* a segmentation layer ``seg`` at the graph's materialization (:func:`segmentation_source`), with
  the selected cells' root ids as selected segments, each coloured by its cell type
  (:func:`type_color`);
* a point annotation layer ``somata``: one point per selected cell at its soma, linked to its
  segment, described as ``"<cell_type>|<layer> <root_id>"``.

Coordinates are minnie65 voxels of 4 x 4 x 40 nm (the viewer's dimensions): soma points are
``x_nm / 4, y_nm / 4, z_nm / 40``; the view is centred on the selected somata's mean.

The materialization is ``version`` if given, else the graph's own (``meta["version"]``) when the
graph came from ``minnie65_public``, else :data:`DEFAULT_VERSION`. Versions with a static
segmentation release (:data:`STATIC_SEGMENTATIONS`) use it; any other version uses the
datastack's dynamic (graphene) segmentation, which shows root ids of any materialization but
asks the viewer to sign in to CAVE. A surrogate graph's root ids are synthetic: its state is
well formed but its segments show nothing in the EM.

Large selections make long URLs (about 200 characters per cell); browsers cap URLs at a few
megabytes, so for thousands of cells save the JSON and load it in Neuroglancer instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..atomic_io import atomic_path
from ..graph import ConnectomeGraph, population_key

DATASTACK = "minnie65_public"
VOXEL_NM: tuple[float, float, float] = (4.0, 4.0, 40.0)
DEFAULT_VERSION = 1300
MINNIE65_IMAGE_SOURCE = "precomputed://https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/minnie65/em"
#: materialization version -> static segmentation of that public release
STATIC_SEGMENTATIONS: dict[int, str] = {
    117: "precomputed://https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/minnie65/seg",
    343: "precomputed://gs://iarpa_microns/minnie/minnie65/seg_m343",
    943: "precomputed://gs://iarpa_microns/minnie/minnie65/seg_m943",
    1300: "precomputed://gs://iarpa_microns/minnie/minnie65/seg_m1300",
}
GRAPHENE_SEGMENTATION = "graphene://middleauth+https://minnie.microns-daf.com/segmentation/table/minnie65_public"
DEFAULT_NEUROGLANCER_URL = "https://spelunker.cave-explorer.org/"
#: colour per coarse cell type (excitatory warm, inhibitory cool); others get :data:`_PALETTE`
TYPE_COLORS: dict[str, str] = {
    "23P": "#e6194b", "4P": "#f58231", "5P-IT": "#ffe119", "5P-ET": "#9a6324", "5P-NP": "#808000",
    "6P-IT": "#f032e6", "6P-CT": "#911eb4",
    "BC": "#4363d8", "BPC": "#42d4f4", "MC": "#3cb44b", "NGC": "#000075",
}
_PALETTE = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
            "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
            "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")


def type_color(cell_type: str) -> str:
    """Hex colour of a cell type: :data:`TYPE_COLORS`, else a fixed palette entry by name hash."""
    if cell_type in TYPE_COLORS:
        return TYPE_COLORS[cell_type]
    h = int(hashlib.sha1(str(cell_type).encode()).hexdigest(), 16)
    return _PALETTE[h % len(_PALETTE)]


def materialization(graph: ConnectomeGraph, version: int | None = None) -> int:
    """The materialization a state shows (see module docstring)."""
    if version is not None:
        return int(version)
    meta_version = str(graph.meta.get("version", ""))
    if graph.meta.get("datastack") == DATASTACK and meta_version.isdigit():
        return int(meta_version)
    return DEFAULT_VERSION


def segmentation_source(version: int) -> str:
    """The minnie65 segmentation holding the root ids of materialization ``version``."""
    return STATIC_SEGMENTATIONS.get(int(version), GRAPHENE_SEGMENTATION)


def select_cells(graph: ConnectomeGraph, population: str | None = None,
                 types: Iterable[str] | None = None, ids: Iterable[int] | None = None) -> np.ndarray:
    """Sorted node indices of one selection: a population ``"<cell_type>|<layer>"``, a list of
    cell types, or a list of root ids. Exactly one must be given; unknown names or ids raise."""
    given = [x is not None for x in (population, types, ids)]
    if sum(given) != 1:
        raise ValueError("give exactly one of population, types or ids")
    nodes = graph.nodes
    if population is not None:
        if population.count("|") != 1:
            raise ValueError(f"population {population!r}: expected '<cell_type>|<layer>', e.g. '4P|L4'")
        cell_type, layer = population.split("|")
        sel = graph.population([cell_type], [layer])
        if not len(sel):
            known = sorted(set(population_key(nodes["cell_type"], nodes["layer"])))
            raise ValueError(f"population {population!r} has no cells; populations: {', '.join(known)}")
        return sel
    if types is not None:
        types = list(types)
        unknown = sorted(set(types) - set(nodes["cell_type"]))
        if unknown or not types:
            raise ValueError(f"cell type(s) {unknown or types} not in the graph; types: "
                             f"{', '.join(sorted(nodes['cell_type'].astype(str).unique()))}")
        return graph.population(types)
    wanted = np.asarray(list(ids), dtype=np.int64)
    present = np.isin(wanted, nodes["root_id"].to_numpy())
    if not len(wanted) or not present.all():
        raise ValueError(f"root id(s) {wanted[~present][:5].tolist() or '[]'} not in the graph"
                         f" ({int((~present).sum())} missing)")
    return np.flatnonzero(nodes["root_id"].isin(wanted).to_numpy())


@dataclass
class NeuroglancerState:
    """A built state: its JSON (``state``), the URL encoding it, and what it shows."""

    state: dict
    url: str
    version: int
    segmentation: str
    segments: list[int] = field(default_factory=list)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.state, indent=indent)

    def save_json(self, path: str | Path) -> Path:
        """Write the state JSON (atomically); Neuroglancer loads it from its JSON editor."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json() + "\n")
        return path


def soma_table(graph: ConnectomeGraph, cells: np.ndarray) -> pd.DataFrame:
    """Selected cells with soma voxels ``pt_x/pt_y/pt_z`` (4 x 4 x 40 nm), root id, type, colour
    and description; cells without a soma position are left out."""
    n = graph.nodes.iloc[cells]
    vox = n[["x_nm", "y_nm", "z_nm"]].to_numpy(dtype=float) / np.asarray(VOXEL_NM)
    keep = np.isfinite(vox).all(axis=1)
    n, vox = n[keep], vox[keep]
    return pd.DataFrame({
        "pt_x": vox[:, 0], "pt_y": vox[:, 1], "pt_z": vox[:, 2],
        "root_id": n["root_id"].to_numpy(dtype=np.int64),
        "cell_type": n["cell_type"].astype(str).to_numpy(),
        "color": [type_color(t) for t in n["cell_type"].astype(str)],
        "description": (population_key(n["cell_type"], n["layer"]) + " " + n["root_id"].astype(str)).to_numpy(),
    })


def neuroglancer_state(graph: ConnectomeGraph, *, population: str | None = None,
                       types: Iterable[str] | None = None, ids: Iterable[int] | None = None,
                       version: int | None = None, target_url: str = DEFAULT_NEUROGLANCER_URL,
                       title: str | None = None) -> NeuroglancerState:
    """A Neuroglancer state of the selected cells (see module docstring); no network access.

    Select with exactly one of ``population`` (``"4P|L4"``), ``types`` (cell types) or ``ids``
    (root ids). ``target_url`` is the Neuroglancer deployment the URL opens.
    """
    from neuroglancer.url_state import to_json_dump
    from nglui.statebuilder import ViewerState

    cells = select_cells(graph, population=population, types=types, ids=ids)
    somata = soma_table(graph, cells)
    v = materialization(graph, version)
    seg = segmentation_source(v)
    roots = graph.nodes["root_id"].to_numpy(dtype=np.int64)[cells]
    colors = dict(zip(roots.tolist(), (type_color(t) for t in graph.nodes["cell_type"].astype(str).iloc[cells])))
    centre = somata[["pt_x", "pt_y", "pt_z"]].mean().to_numpy() if len(somata) else np.zeros(3)
    what = population or (", ".join(types) if types is not None else f"{len(roots)} cells")
    vs = ViewerState(target_url=target_url, dimensions=list(VOXEL_NM), infer_coordinates=False,
                     capabilities="main", position=[float(c) for c in centre],
                     title=title or f"{graph.meta.get('source', 'graph')}: {what} (v{v})")
    vs.add_image_layer(MINNIE65_IMAGE_SOURCE, name="em")
    vs.add_segmentation_layer(seg, name="seg")
    vs.add_segments(roots.tolist(), segment_colors=colors, name="seg")
    vs.add_points(somata, name="somata", point_column="pt", segment_column="root_id",
                  description_column="description", data_resolution=list(VOXEL_NM),
                  linked_segmentation="seg", set_position=False)
    url = vs.to_url(target_url=target_url)
    # neuroglancer's own encoding (ids as strings, as in the URL), not nglui's int-valued dump
    state = json.loads(to_json_dump(vs.viewer.state))
    return NeuroglancerState(state=state, url=url, version=v,
                             segmentation=seg, segments=roots.tolist())
