"""Figures of a compiled column: its connectome masks (:func:`mask_images`).

Built without pyplot, like :mod:`connectomics.plots` (whose colours it shares): save with
:func:`connectomics.plots.save_figure` or let Jupyter display the figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from connectomics.plots import E_COLOR, I_COLOR

from .column import CorticalColumn


def _population_ticks(ax, axis: str, names: Sequence[str], sizes: Sequence[int]) -> None:
    edges = np.cumsum([0, *sizes])
    for b in edges[1:-1]:
        (ax.axvline if axis == "x" else ax.axhline)(b - 0.5, color="0.4", lw=0.6, gid="population-boundary")
    centers = (edges[:-1] + edges[1:]) / 2 - 0.5
    labels = [n.replace("|", "\n") for n in names]
    if axis == "x":
        ax.set_xticks(centers, labels, fontsize=7)
    else:
        ax.set_yticks(centers, labels, fontsize=7, rotation=90, va="center")
    ax.tick_params(length=0)


def mask_images(column: CorticalColumn, dpi: int | None = None) -> Figure:
    """Each masked projection of a compiled column as an image (rows = postsynaptic
    units, columns = presynaptic units; red = excitatory, blue = inhibitory presynaptic unit),
    populations separated by grey lines, titled with its shape, edges, density and the
    dense/sparse backend the compiler chose. Top row: projections between layers; bottom row:
    within-layer projections. The dense input projection (``nn.Linear``) is not shown.

    ``dpi`` (default: enough pixels for one per unit, 100-300) is the figure's resolution.
    """
    if not isinstance(column, CorticalColumn):
        raise TypeError(f"mask_images needs a compiled graphnet CorticalColumn, got {type(column).__name__}")
    plans = column.projection_plans
    ff = [k for k, p in plans.items() if p.src != p.dst]
    intra = [k for k, p in plans.items() if p.src == p.dst]
    rows = [r for r in (ff, intra) if r]
    if not rows:
        raise ValueError("the column has no masked projections")
    ncols = max(len(r) for r in rows)
    panel = 3.6
    biggest = max(max(p.n_src, p.n_dst) for p in plans.values())
    dpi = dpi or int(min(300, max(100, np.ceil(1.15 * biggest / (panel - 1.0)))))
    fig = Figure(figsize=(panel * ncols + 0.6, (panel + 0.4) * len(rows) + 0.5), dpi=dpi,
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), ncols, squeeze=False))

    cmap = mcolors.ListedColormap([I_COLOR, "white", E_COLOR])
    norm = mcolors.BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    for r, keys in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(keys):
                ax.set_axis_off()
                continue
            pp = plans[keys[c]]
            mod = column.projection(pp.src, pp.dst)
            mask = mod.mask.detach().cpu().numpy().astype(bool)
            src_plan, dst_plan = column.layer_plans[pp.src], column.layer_plans[pp.dst]
            sign = np.where(np.asarray(src_plan.ei) == "I", -1, 1)
            img = np.where(mask, sign[None, :], 0).astype(float)
            im = ax.imshow(img, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
            im.set_gid(f"mask:{pp.src}->{pp.dst}")
            _population_ticks(ax, "x", src_plan.populations, src_plan.population_sizes)
            _population_ticks(ax, "y", dst_plan.populations, dst_plan.population_sizes)
            ax.set_xlabel(f"presynaptic: {pp.src} ({pp.n_src} units)", fontsize=8)
            ax.set_ylabel(f"postsynaptic: {pp.dst} ({pp.n_dst} units)", fontsize=8)
            within = " (within layer)" if pp.src == pp.dst else ""
            ax.set_title(f"{pp.src} \u2192 {pp.dst}{within}\n{mod.n_edges} edges, density "
                         f"{mod.density:.4f}, {column.backends[keys[c]]}", fontsize=9)
    spec = column.spec
    fig.suptitle(f"Compiled column {spec.name!r} ({column.source}, mask={spec.mask}): masks, "
                 "rows = post, columns = pre; red/blue = E/I presynaptic", fontsize=10)
    return fig
