"""Figures of a compiled column: its connectome masks (:func:`mask_images`).

Built without pyplot, like :mod:`connectomics.plots` (whose colours it shares): save with
:func:`connectomics.plots.save_figure` or let Jupyter display the figure.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.optimize import isotonic_regression

from connectomics.plots import E_COLOR, I_COLOR

from .column import CorticalColumn
from .plan import DisplayOrder

PANEL_IN = 4.3      # width and height of one mask panel, labels included (inches)
IMAGE_IN = 3.0      # the image part of a panel, about (inches): sets the dpi
LABEL_PT = 8.0      # population label font size (points)
LEADER_PT = 12.0    # distance of a population label from the image's edge (points)


def spread_labels(centres: np.ndarray, gap: float, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Positions as close as possible (least squares) to ascending ``centres`` with at least
    ``gap`` between neighbours, inside ``[lo, hi]`` where they fit: where labels would overlap
    they are pushed apart, and a leader line joins each label to its centre."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 0:
        return c
    steps = gap * np.arange(len(c))
    # p_i = q_i + i * gap with q non-decreasing: an isotonic regression of c_i - i * gap
    q = isotonic_regression(c - steps).x
    q = np.clip(q, lo, max(lo, hi - steps[-1]))  # the box-constrained optimum is the clipped one
    return q + steps


def _population_labels(ax, axis: str, shown: DisplayOrder, gap_frac: float, labels: bool = True) -> None:
    """One separator between neighbouring populations (solid between types or m-types, dashed
    between layers of one type) and, with ``labels``, one label per population outside the
    ``axis`` edge of ``ax``, joined to its block by a leader line (long where labels had to
    move apart)."""
    ax.set_xticks([]) if axis == "x" else ax.set_yticks([])
    edges = np.cumsum([0, *shown.sizes])
    n = int(edges[-1])
    line = ax.axvline if axis == "x" else ax.axhline
    for i, b in enumerate(edges[1:-1], start=1):
        same_kind = shown.populations[i - 1].rpartition("|")[0] == shown.populations[i].rpartition("|")[0]
        line(b - 0.5, color="0.55" if same_kind else "0.2", lw=0.6 if same_kind else 1.0,
             ls=(0, (3, 2)) if same_kind else "-", gid="population-boundary")
    if not labels:
        return
    centres = (edges[:-1] + edges[1:]) / 2 - 0.5
    # in axes fraction along the axis; images put unit 0 at the left and at the top
    frac = (centres + 0.5) / n
    frac = frac if axis == "x" else 1.0 - frac
    order = np.argsort(frac)
    placed = np.empty_like(frac)
    placed[order] = spread_labels(frac[order], gap_frac)
    style = dict(fontsize=LABEL_PT, gid="population-label", annotation_clip=False,
                 arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5, shrinkA=1, shrinkB=0))
    for name, f, p in zip(shown.populations, frac, placed):
        if axis == "x":
            ax.annotate(name, xy=(f, 0.0), xycoords="axes fraction", xytext=(p, -LEADER_PT),
                        textcoords=("axes fraction", "offset points"), rotation=90,
                        ha="center", va="top", **style)
        else:
            ax.annotate(name, xy=(0.0, f), xycoords="axes fraction", xytext=(-LEADER_PT, p),
                        textcoords=("offset points", "axes fraction"), ha="right", va="center",
                        **style)


def _label_room(shown: DisplayOrder) -> float:
    """Points between an image's edge and its axis label: the leader and the longest name."""
    return LEADER_PT + 0.62 * LABEL_PT * max(map(len, shown.populations)) + 4.0


def _panels(column: CorticalColumn) -> list[tuple[str, list[str | None]]]:
    """``[(postsynaptic layer, [projection key per panel column])]``: a row per layer that
    receives masked projections, projections from other layers first (in the spec's order), the
    within-layer projection in the last column; ``None`` where a row has fewer."""
    plans = column.projection_plans
    rows = []
    for name in column.layer_plans:
        ff = [k for k, p in plans.items() if p.dst == name and p.src != name]
        intra = [k for k, p in plans.items() if p.dst == name and p.src == name]
        if ff or intra:
            rows.append((name, ff, intra))
    n_ff = max(len(ff) for _, ff, _ in rows)
    has_intra = any(intra for _, _, intra in rows)
    return [(name, ff + [None] * (n_ff - len(ff)) + (intra or [None]) * has_intra)
            for name, ff, intra in rows]


def _key(ax, column: CorticalColumn) -> None:
    """How to read the figure, in a panel the grid leaves free."""
    first = next(iter(column.layers))
    ax.set_axis_off()
    ax.text(0.0, 1.0,
            "How to read the masks\n\n"
            "rows: postsynaptic units\ncolumns: presynaptic units\n"
            "a dot: a connection in the mask\n\n"
            "units grouped by population\n(display order; the model keeps\nthe units in node order)\n"
            "solid line: between cell types\ndashed line: between layers of a type\n\n"
            f"input \u2192 {first}: dense nn.Linear\n"
            f"({column.in_features} \u2192 {column.layers[first].size}), not drawn",
            transform=ax.transAxes, ha="left", va="top", fontsize=9, linespacing=1.3)
    ax.legend(handles=[Patch(color=E_COLOR, label="excitatory presynaptic unit"),
                       Patch(color=I_COLOR, label="inhibitory presynaptic unit")],
              loc="lower left", frameon=False, fontsize=9)


def mask_images(column: CorticalColumn, dpi: int | None = None) -> Figure:
    """Each masked projection of a compiled column as an image: rows = postsynaptic units,
    columns = presynaptic units, a dot per connection (red: excitatory presynaptic unit, blue:
    inhibitory). One row of panels per postsynaptic layer: projections from other layers, then
    the within-layer one; titled with its edges, density and the dense/sparse backend the
    compiler chose. The dense input projection (``nn.Linear``) is not drawn.

    Units are drawn grouped by population (:meth:`LayerPlan.display_order`), with one separator
    and one label per population: each image is its projection's ``(n_post, n_pre)`` mask with
    rows and columns permuted, values unchanged. The model's units keep their node order.

    ``dpi`` (default: about one pixel per unit of the largest layer, 100-200) is the figure's
    resolution.
    """
    if not isinstance(column, CorticalColumn):
        raise TypeError(f"mask_images needs a compiled graphnet CorticalColumn, got {type(column).__name__}")
    plans = column.projection_plans
    if not plans:
        raise ValueError("the column has no masked projections")
    grid = _panels(column)
    nrows, ncols = len(grid), len(grid[0][1])
    biggest = max(max(p.n_src, p.n_dst) for p in plans.values())
    dpi = dpi or int(np.clip(np.ceil(1.1 * biggest / IMAGE_IN), 100, 200))
    fig = Figure(figsize=(PANEL_IN * ncols + 0.3, PANEL_IN * nrows + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    # label spacing in axes fraction: a label's height plus a little, over the image's height
    gap = 1.25 * LABEL_PT / (72.0 * IMAGE_IN)
    shown = {name: p.display_order() for name, p in column.layer_plans.items()}
    cmap = mcolors.ListedColormap([I_COLOR, "white", E_COLOR])
    norm = mcolors.BoundaryNorm([-1.5, -0.5, 0.5, 1.5], cmap.N)
    free = []
    for r, (post, keys) in enumerate(grid):
        labelled_rows = False
        for c, key in enumerate(keys):
            ax = axes[r, c]
            if key is None:
                free.append(ax)
                ax.set_axis_off()
                continue
            pp = plans[key]
            mod = column.projection(pp.src, pp.dst)
            mask = mod.mask.detach().cpu().numpy().astype(bool)
            sign = np.where(np.asarray(column.layer_plans[pp.src].ei) == "I", -1, 1)
            img = np.where(mask, sign[None, :], 0).astype(float)
            rows_, cols_ = shown[pp.dst].order, shown[pp.src].order
            im = ax.imshow(img[np.ix_(rows_, cols_)], cmap=cmap, norm=norm, interpolation="nearest",
                           aspect="auto")
            im.set_gid(f"mask:{pp.src}->{pp.dst}")
            _population_labels(ax, "x", shown[pp.src], gap)
            ax.set_xlabel(f"presynaptic: {pp.src} ({pp.n_src} units)", fontsize=9,
                          labelpad=_label_room(shown[pp.src]))
            # the panels of a row share their postsynaptic layer: its labels go on the first
            _population_labels(ax, "y", shown[pp.dst], gap, labels=not labelled_rows)
            if not labelled_rows:
                ax.set_ylabel(f"postsynaptic: {pp.dst} ({pp.n_dst} units)", fontsize=9,
                              labelpad=_label_room(shown[pp.dst]))
                labelled_rows = True
            within = " (within layer)" if pp.src == pp.dst else ""
            ax.set_title(f"{pp.src} \u2192 {pp.dst}{within}\n{mod.n_edges} edges, density "
                         f"{mod.density:.4f}, {column.backends[key]}", fontsize=9)
    if free:
        _key(free[0], column)
    spec = column.spec
    fig.suptitle(f"Masks of the compiled column {spec.name!r} ({column.source}, mask={spec.mask})",
                 fontsize=11)
    return fig
