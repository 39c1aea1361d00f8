"""Figures of a column's graphs, shared by the notebook and ``build_graph --plots``.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
registry, no ``plt.show``), so it works under any backend, Agg included; save it with
:func:`save_figure` or let Jupyter display it.

Graph figures
    :func:`cells_per_type_layer`, :func:`soma_depths`, :func:`connectivity_matrix`,
    :func:`layer_flow`, :func:`degree_distributions`, :func:`compare_graphs` and
    :func:`save_graph_plots`. The numbers they draw are :mod:`connectomics.stats`' tables.

A compiled column's masks are drawn by :mod:`graphnet.plots`, training curves and confusion
matrices by :mod:`pipelines.plots` (connectomics imports neither package).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from . import stats
from .graph import population_key
from .layers import LayerBounds
from .stats import layer_rank, layers_present, type_rank

if TYPE_CHECKING:  # pragma: no cover
    from .graph import ConnectomeGraph

E_COLOR = "#c0392b"  # excitatory: red
I_COLOR = "#2e6fba"  # inhibitory: blue
EI_COLORS = {"E": E_COLOR, "I": I_COLOR}
LAYER_COLORS = {"L1": "#8c8c8c", "L2/3": "#4c9f70", "L4": "#e0a030", "L5": "#8e5bb5",
                "L6": "#3b7dbf", "WM": "#5a4636"}
#: the canonical feedforward pathway through the column
CANONICAL_FLOW: tuple[str, ...] = ("L4", "L2/3", "L5", "L6")

VALUE_LABELS = {
    "connection_probability": "connection probability",
    "synapses_per_connection": "synapses per connection",
    "summed_size": "summed synapse size (voxels)",
    "n_synapses": "total synapses",
    "connected_pairs": "connected pairs",
}
#: values plotted on a log colour scale by default
LOG_VALUES = ("summed_size", "n_synapses", "connected_pairs")


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _bounds_of(graph: "ConnectomeGraph", bounds: LayerBounds | None) -> LayerBounds:
    if bounds is not None:
        return bounds
    b = graph.meta.get("layer_bounds_um") if graph.meta else None
    return LayerBounds(tuple(float(x) for x in b)) if b else LayerBounds()


# ------------------------------------------------------------------------------------------------
# graph plots
# ------------------------------------------------------------------------------------------------
def cells_per_type_layer(graph: "ConnectomeGraph") -> Figure:
    """Stacked bars: cells per coarse type, split by layer; type names coloured by E/I."""
    tab = stats.cell_counts(graph)
    ei = graph.nodes.groupby("cell_type")["ei"].first()
    fig = _figure(max(6.0, 0.55 * len(tab) + 2.5), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(tab))
    bottom = np.zeros(len(tab))
    for layer in tab.columns:
        h = tab[layer].to_numpy(float)
        ax.bar(x, h, bottom=bottom, color=LAYER_COLORS.get(layer, "0.5"), label=layer,
               edgecolor="white", linewidth=0.5, gid=f"layer:{layer}")
        bottom += h
    for xi, total in zip(x, bottom):
        ax.text(xi, total, f"{int(total)}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, list(tab.index), rotation=45, ha="right")
    for lab, t in zip(ax.get_xticklabels(), tab.index):
        lab.set_color(EI_COLORS.get(ei.get(t), "black"))
    ax.set_ylabel("cells")
    ax.set_xlabel("cell type (red: excitatory, blue: inhibitory)")
    ax.set_title(f"Cells per type and layer ({graph.n_nodes} cells)")
    ax.set_ylim(0, bottom.max() * 1.1 if len(bottom) else 1)
    ax.legend(title="layer", fontsize=8, title_fontsize=8, frameon=False, loc="upper right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _draw_layer_bounds(ax, bounds: LayerBounds, names: bool = True) -> None:
    """Dashed lines at the boundaries, the pia at 0 and (``names``) layer names at the right edge,
    placed in the visible part of each layer: call after the y limits are set."""
    for b in bounds.bounds_um:
        ax.axhline(b, color="0.35", lw=0.8, ls="--", zorder=0, gid="layer-boundary")
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0, gid="pia")
    if names:
        lo, hi = sorted(ax.get_ylim())
        tops = (min(0.0, lo), *bounds.bounds_um, max(bounds.bounds_um[-1], hi))
        for name, top, bot in zip(bounds.names, tops[:-1], tops[1:]):
            top, bot = max(top, lo), min(bot, hi)
            if bot - top > 5.0:
                ax.text(1.01, (top + bot) / 2, name, transform=ax.get_yaxis_transform(),
                        va="center", ha="left", fontsize=8, color="0.25", clip_on=False,
                        gid=f"layer-name:{name}")


def soma_depths(graph: "ConnectomeGraph", bounds: LayerBounds | None = None) -> Figure:
    """Soma positions in depth with the layer boundaries (dashed lines).

    Left: horizontal position against depth below the pia, coloured by E/I. Right: depth of each
    cell per type (jittered). ``bounds`` default to those the graph was built with
    (``meta["layer_bounds_um"]``), else :class:`~connectomics.layers.LayerBounds`.
    """
    bounds = _bounds_of(graph, bounds)
    nodes = graph.nodes
    depth = nodes["depth_um"].to_numpy(float)
    xyz = nodes[["x_nm", "y_nm", "z_nm"]].to_numpy(float)
    try:
        from .layers import nm_to_frame_um

        x = nm_to_frame_um(xyz)[:, 0]
        xlabel = "horizontal position (um, column frame)"
    except Exception:  # standard_transform missing: CAVE x
        x = xyz[:, 0] / 1000.0
        xlabel = "x (um, CAVE)"
    fig = _figure(11.0, 6.0)
    ax0, ax1 = fig.subplots(1, 2, sharey=True, width_ratios=[1.0, 1.6])
    for cls, label in (("E", "excitatory"), ("I", "inhibitory")):
        sel = (nodes["ei"] == cls).to_numpy()
        ax0.scatter(x[sel], depth[sel], s=5, alpha=0.7, color=EI_COLORS[cls], lw=0,
                    label=f"{label} ({int(sel.sum())})")
    ax0.set_xlabel(xlabel)
    ax0.set_ylabel("depth below pia (um)")
    ax0.set_title("Soma positions")
    ax0.legend(fontsize=8, loc="lower left", markerscale=2)
    types = sorted(nodes["cell_type"].unique(), key=type_rank)
    rng = np.random.default_rng(0)
    ei = nodes.groupby("cell_type")["ei"].first()
    for i, t in enumerate(types):
        sel = (nodes["cell_type"] == t).to_numpy()
        ax1.scatter(i + rng.uniform(-0.3, 0.3, sel.sum()), depth[sel], s=4, alpha=0.6, lw=0,
                    color=EI_COLORS.get(ei[t], "0.3"))
    ax1.set_xticks(np.arange(len(types)), types, rotation=45, ha="right")
    for lab, t in zip(ax1.get_xticklabels(), types):
        lab.set_color(EI_COLORS.get(ei[t], "black"))
    ax1.set_xlim(-0.6, len(types) - 0.4)
    ax1.set_title("Depth per cell type (dashed: layer boundaries)")
    ax1.set_xlabel("cell type")
    lo = min(0.0, float(np.nanmin(depth)) if len(depth) else 0.0) - 10
    hi = max(bounds.bounds_um[-1] + 40.0, float(np.nanmax(depth)) + 10 if len(depth) else 0.0)
    ax0.set_ylim(hi, lo)  # pia on top (shared with ax1)
    _draw_layer_bounds(ax0, bounds, names=False)
    _draw_layer_bounds(ax1, bounds, names=True)
    return fig


def _ei_blocks(ax, names: Sequence[str], ei: Mapping[str, str], right: bool = True) -> None:
    """Colour tick labels by E/I, draw lines between E and I runs, name the runs on top/right."""
    cls = [ei.get(n, "?") for n in names]
    for lab, c in zip(ax.get_yticklabels(), cls):
        lab.set_color(EI_COLORS.get(c, "black"))
    for lab, c in zip(ax.get_xticklabels(), cls):
        lab.set_color(EI_COLORS.get(c, "black"))
    starts = [0] + [i for i in range(1, len(cls)) if cls[i] != cls[i - 1]]
    for s in starts[1:]:
        ax.axhline(s - 0.5, color="black", lw=1.5, gid="ei-boundary")
        ax.axvline(s - 0.5, color="black", lw=1.5, gid="ei-boundary")
    ends = starts[1:] + [len(cls)]
    centers = [(s + e - 1) / 2 for s, e in zip(starts, ends)]
    words = {"E": "excitatory", "I": "inhibitory"}
    labels = [words.get(cls[s], cls[s]) for s in starts]
    top = ax.secondary_xaxis("top")
    top.set_xticks(centers, labels, fontsize=9)
    sides = [(top, top.get_xticklabels())]
    if right:
        rax = ax.secondary_yaxis("right")
        rax.set_yticks(centers, labels, fontsize=9, rotation=90, va="center")
        sides.append((rax, rax.get_yticklabels()))
    for axis, ticklabels in sides:
        axis.tick_params(length=0)
        for lab, s in zip(ticklabels, starts):
            lab.set_color(EI_COLORS.get(cls[s], "black"))


def _draw_matrix(fig: Figure, ax, table: pd.DataFrame, value: str, ei: Mapping[str, str], *,
                 log: bool | None = None, norm=None, colorbar: bool = True, annotate: bool = False,
                 fontsize: float = 7.0, right_labels: bool = True):
    mat = table.to_numpy(float)
    if norm is None:
        log = value in LOG_VALUES if log is None else log
        pos = mat[np.isfinite(mat) & (mat > 0)]
        if log and len(pos):
            norm = mcolors.LogNorm(vmin=pos.min(), vmax=pos.max())
        else:
            finite = mat[np.isfinite(mat)]
            norm = mcolors.Normalize(vmin=0.0 if value != "synapses_per_connection" else None,
                                     vmax=finite.max() if len(finite) and finite.max() > 0 else 1.0)
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, norm=norm, interpolation="nearest",
                   aspect="equal")
    names = list(table.index)
    ax.set_xticks(np.arange(len(table.columns)), list(table.columns), rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(len(names)), names, fontsize=fontsize)
    bad = ~np.isfinite(mat) | ((mat <= 0) if isinstance(norm, mcolors.LogNorm) else False)
    ax.set_xlabel("postsynaptic" + ("  (grey: no connection)" if np.any(bad) else ""))
    ax.set_ylabel("presynaptic")
    if list(table.columns) == names and all(n in ei for n in names):
        _ei_blocks(ax, names, ei, right=right_labels)
    if annotate:
        for (i, j), v in np.ndenumerate(mat):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=fontsize,
                        color="white" if norm(v) < 0.6 else "black")
    if colorbar:
        cb = fig.colorbar(im, ax=ax, shrink=0.8, pad=0.02)
        cb.set_label(VALUE_LABELS.get(value, value) + (" (log)" if isinstance(norm, mcolors.LogNorm) else ""))
    return im


def connectivity_matrix(graph: "ConnectomeGraph", value: str = "connection_probability",
                        order: str | Sequence[str] = "ei", *, by: str = "population",
                        log: bool | None = None, annotate: bool | None = None) -> Figure:
    """Type x type matrix of ``value`` (rows presynaptic, columns postsynaptic) with the
    excitatory/inhibitory blocks marked (black lines between E and I runs, labels coloured
    red/blue, block names on top and right). The image's data is :func:`connectivity_table`.

    ``order``/``by`` as in :func:`population_order`; ``log`` (default: on for ``summed_size``,
    ``n_synapses``, ``connected_pairs``) picks a log colour scale; grey = no connection where the
    value is undefined (``synapses_per_connection``) or zero on a log scale. ``annotate`` writes
    the values in the cells (default: when there are at most 12 rows).
    """
    table = stats.connectivity_table(graph, value, order, by)
    # a count-only source (the bundled MICrONS column) has no synapse sizes: missing, not zero
    sizes_unknown = value == "summed_size" and bool(np.isnan(table.to_numpy()).any())
    if sizes_unknown:
        table = table * np.nan
    _, ei, _ = stats.population_groups(graph, by)
    k = len(table)
    # about 0.17 in a row: the 40 populations of the real column fit a page's width with
    # labels that stay readable when the page shows the figure at that width
    side = max(5.5, 0.17 * k + 3.0)
    fig = _figure(side + 1.3, side)
    ax = fig.add_subplot()
    _draw_matrix(fig, ax, table, value, ei, log=log,
                 annotate=(k <= 12) if annotate is None else annotate,
                 fontsize=7 if k > 12 else 8)
    src = graph.meta.get("source", "") if graph.meta else ""
    ax.set_title(f"{VALUE_LABELS[value].capitalize()}, {by.replace('_', ' ')} x {by.replace('_', ' ')}"
                 + (f" ({src})" if src else ""))
    if sizes_unknown:
        ax.text(0.5, 0.5, "synapse sizes unknown:\nthe source has synapse counts only", transform=ax.transAxes,
                ha="center", va="center", fontsize=12, gid="sizes-unknown",
                bbox=dict(boxstyle="round", fc="white", ec="0.5"))
    return fig


RAD = 0.45  # arc bend of the flow arrows


def _flow_axes(ax, table: pd.DataFrame, layers: Sequence[str], counts: Mapping[str, int],
               flow: Sequence[str]) -> None:
    """Layers as circles down the depth axis; arrows pre -> post with width ~ synapses."""
    y = {l: -i for i, l in enumerate(layers)}
    between = table[table["pre_layer"] != table["post_layer"]]
    top = max(float(between["n_synapses"].max()), 1.0) if len(between) else 1.0
    chain = set(zip(flow[:-1], flow[1:]))
    total = float(between["n_synapses"].sum()) or 1.0
    for r in between.itertuples(index=False):
        if r.n_synapses <= 0 or r.pre_layer not in y or r.post_layer not in y:
            continue
        canonical = (r.pre_layer, r.post_layer) in chain
        share = r.n_synapses / total
        if not canonical and share < 0.005:
            continue
        lw = 0.5 + 7.0 * r.n_synapses / top
        p = FancyArrowPatch((0.0, y[r.pre_layer]), (0.0, y[r.post_layer]),
                            connectionstyle=f"arc3,rad={RAD}", arrowstyle="-|>",
                            mutation_scale=8 + lw, lw=lw, shrinkA=14, shrinkB=14,
                            color=E_COLOR if canonical else "0.55", alpha=0.9 if canonical else 0.5,
                            gid=f"flow:{r.pre_layer}->{r.post_layer}" + (":canonical" if canonical else ""),
                            zorder=3 if canonical else 2)
        ax.add_patch(p)
        if canonical:  # label at the arc's apex: arc3 puts its control point at rad * dy in x
            dy = y[r.post_layer] - y[r.pre_layer]
            ax.text(0.5 * RAD * dy, (y[r.pre_layer] + y[r.post_layer]) / 2,
                    f"{share:.0%}", fontsize=8, color=E_COLOR, ha="center", va="center", zorder=6,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    n_max = max(counts.values()) if counts else 1
    for l in layers:
        ax.scatter([0.0], [y[l]], s=380 + 500 * counts.get(l, 0) / n_max, color=LAYER_COLORS.get(l, "0.6"),
                   zorder=4, edgecolor="white", lw=1.5)
        ax.text(0.0, y[l], l, ha="center", va="center", fontsize=9, fontweight="bold", color="white",
                zorder=5)
        ax.text(1.1, y[l], f"{counts.get(l, 0)} cells", ha="left", va="center", fontsize=8, color="0.3")
    ax.set_xlim(-1.2, 1.7)
    ax.set_ylim(-len(layers) + 0.5, 0.5)
    ax.set_aspect("equal", adjustable="box")  # arcs bend in display space: keep x, y alike
    ax.set_axis_off()


def layer_flow(graph: "ConnectomeGraph", pre_ei: str | None = "E",
               value: str = "connection_probability",
               flow: Sequence[str] = CANONICAL_FLOW) -> Figure:
    """Layer-to-layer connectivity and the flow through the column.

    Left: layer x layer matrix of ``value`` (from :func:`layer_table`, presynaptic cells of class
    ``pre_ei``; default excitatory). Right: the layers down the depth axis with an arrow per
    pre -> post layer pair, width proportional to its synapses (pairs under 0.5% of the
    between-layer synapses left out); the canonical pathway ``flow`` (L4 -> L2/3 -> L5 -> L6) in red,
    labelled with its share of the between-layer synapses.
    """
    table = stats.layer_table(graph, pre_ei)
    layers = layers_present(graph.nodes["layer"])
    has_pre = table.groupby("pre_layer")["possible_pairs"].sum()
    rows = [l for l in layers if has_pre.get(l, 0) > 0]
    mat = table.pivot(index="pre_layer", columns="post_layer", values=value).loc[rows, layers]
    mat.index.name, mat.columns.name = "pre", "post"
    fig = _figure(12.0, 6.5)
    ax0, ax1 = fig.subplots(1, 2, width_ratios=[1.5, 1.0])
    im = _draw_matrix(fig, ax0, pd.DataFrame(mat), value, {}, annotate=True, fontsize=8,
                      log=value in LOG_VALUES)
    im.set_gid("layer-matrix")
    who = {"E": "excitatory", "I": "inhibitory", None: "all"}.get(pre_ei, pre_ei)
    ax0.set_xlabel("postsynaptic layer")
    ax0.set_ylabel(f"presynaptic layer ({who} cells)")
    ax0.set_title(f"{VALUE_LABELS[value].capitalize()} by layer ({who} presynaptic)")
    counts = graph.nodes["layer"].value_counts().to_dict()
    _flow_axes(ax1, table, layers, counts, flow)
    ax1.set_title("Synapses between layers (arrow width)\nred: " + " \u2192 ".join(flow)
                  + " (% of between-layer synapses)", fontsize=10)
    return fig


def _group_values(graph: "ConnectomeGraph", by: str | None) -> tuple[np.ndarray, list[str]]:
    nodes = graph.nodes
    if by is None:
        return np.full(len(nodes), "all", dtype=object), ["all"]
    if by == "population":
        g = population_key(nodes["cell_type"], nodes["layer"]).to_numpy()
        return g, stats.population_order(graph, "ei")
    if by not in nodes.columns:
        raise ValueError(f"by={by!r}: use a node column (cell_type, layer, ei, mtype), "
                         "'population' or None")
    g = nodes[by].astype(str).to_numpy()
    rank = {"cell_type": type_rank, "mtype": type_rank, "layer": layer_rank}.get(by, str)
    return g, sorted(set(g), key=rank)


def degree_distributions(graph: "ConnectomeGraph", by: str | None = "cell_type") -> Figure:
    """In- and out-degree (connected partners per cell) per group, as box plots (whiskers 5-95%,
    dots = mean), boxes coloured by E/I. ``by``: a node column (``cell_type``, ``layer``, ``ei``,
    ``mtype``), ``"population"`` or ``None`` (all cells: histograms)."""
    deg = stats.degrees(graph)
    groups, names = _group_values(graph, by)
    if by is None:
        fig = _figure(10.0, 4.0)
        axes = fig.subplots(1, 2, sharey=True)
    else:  # in above out, sharing the groups: the names are written once and stay readable
        fig = _figure(max(8.0, 0.3 * len(names) + 2.5), 7.0)
        axes = fig.subplots(2, 1, sharex=True)
    for ax, col, title in zip(axes, ("in_degree", "out_degree"), ("In-degree", "Out-degree")):
        vals = deg[col].to_numpy()
        if by is None:
            ax.hist(vals, bins=40, color="0.4")
            ax.set_xlabel(f"{title.lower()} (connected partners)")
            ax.set_ylabel("cells")
            ax.set_title(f"{title} (mean {vals.mean():.1f})")
            continue
        data = [vals[groups == n] for n in names]
        bp = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6,
                        showmeans=True, meanprops=dict(marker="o", markersize=3,
                                                       markerfacecolor="black", markeredgecolor="none"),
                        medianprops=dict(color="black"))
        ei = deg.groupby(groups)["ei"].agg(lambda s: s.iloc[0] if s.nunique() == 1 else "?")
        for patch, n in zip(bp["boxes"], names):
            patch.set_facecolor(EI_COLORS.get(ei.get(n), "0.7"))
            patch.set_alpha(0.6)
        ax.set_xticks(np.arange(1, len(names) + 1), names, rotation=45, ha="right",
                      fontsize=8 if len(names) <= 24 else 7)
        for lab, n in zip(ax.get_xticklabels(), names):
            lab.set_color(EI_COLORS.get(ei.get(n), "black"))
        ax.set_title(f"{title} per {by.replace('_', ' ')}")
        ax.set_ylabel("connected partners per cell")
        ax.spines[["top", "right"]].set_visible(False)
    if by is None:
        axes[0].set_ylabel("cells")
        axes[0].tick_params(labelleft=True)
    else:
        axes[1].set_xlabel(by.replace("_", " ") + " (red: excitatory, blue: inhibitory)")
    return fig


def _ccdf(ax, vals: np.ndarray, **kw) -> None:
    v = np.sort(np.asarray(vals, float))
    if not len(v):
        return
    ax.step(v, 1.0 - np.arange(len(v)) / len(v), where="post", **kw)


def compare_graphs(graphs: Mapping[str, "ConnectomeGraph"], value: str = "connection_probability",
                   order: str | Sequence[str] = "ei", by: str = "population") -> Figure:
    """Graphs of the same cells side by side, the first entry the reference: a connectome beside
    its null models, the real column beside the surrogate, two materializations.

    Top: each graph's ``value`` matrix on one shared colour scale, grouped ``by`` populations
    (``"<type>|<layer>"``), ``"cell_type"`` or another node column, in the reference's ``order``;
    up to three matrices a row (four: two by two). Bottom: E/I class connection probabilities;
    in- and out-degree distributions (complementary CDFs); reciprocity and the correlation of
    each matrix with the reference's.
    """
    if not graphs:
        raise ValueError("compare_graphs needs at least one graph")
    names = list(graphs)
    ref = graphs[names[0]]
    rows = stats.population_order(ref, order, by) if isinstance(order, str) else list(order)
    tables = {}
    for n, g in graphs.items():
        t = stats.connectivity_table(g, value, "ei", by)
        tables[n] = t.reindex(index=rows, columns=rows)
        if value != "synapses_per_connection":
            tables[n] = tables[n].fillna(0.0)
    allv = np.concatenate([t.to_numpy(float).ravel() for t in tables.values()])
    finite = allv[np.isfinite(allv)]
    if value in LOG_VALUES and (finite > 0).any():
        norm = mcolors.LogNorm(vmin=finite[finite > 0].min(), vmax=finite.max())
    else:
        norm = mcolors.Normalize(vmin=0.0, vmax=float(finite.max()) if len(finite) and finite.max() > 0 else 1.0)
    k = len(names)
    matrix_rows = -(-k // 3)
    per_row = -(-k // matrix_rows)
    matrix_in = 11.0 / per_row   # a matrix's share of the width: size its labels to it
    fig = _figure(11.5, matrix_in * matrix_rows + 4.2)
    gs = fig.add_gridspec(2, 1, height_ratios=[matrix_in * matrix_rows, 4.2])
    top = gs[0].subgridspec(matrix_rows, per_row)
    bottom = gs[1].subgridspec(1, 3)
    _, ei, _ = stats.population_groups(ref, by)
    fontsize = float(np.clip(0.55 * 72 * matrix_in / max(len(rows), 1), 4.0, 8.0))
    im = None
    for i, n in enumerate(names):
        ax = fig.add_subplot(top[i // per_row, i % per_row])
        im = _draw_matrix(fig, ax, tables[n], value, ei, norm=norm, colorbar=False, fontsize=fontsize,
                          right_labels=False)
        ax.set_title(n, pad=20)   # above the E/I block names
        if i % per_row:
            ax.set_ylabel("")
    cb = fig.colorbar(im, ax=fig.axes, shrink=0.8, location="right", pad=0.01) if im is not None else None
    if cb is not None:
        cb.set_label(VALUE_LABELS.get(value, value))
    palette = [mcolors.to_hex(c) for c in mpl.colormaps["tab10"].colors]
    axc, axd, axr = (fig.add_subplot(bottom[0, j]) for j in range(3))
    classes = ("E->E", "E->I", "I->E", "I->I")
    w = 0.8 / k
    for i, n in enumerate(names):
        p = stats.ei_connection_probability(graphs[n])
        axc.bar(np.arange(4) + (i - (k - 1) / 2) * w, [p[c] for c in classes], w, label=n,
                color=palette[i % 10])
        deg = stats.degrees(graphs[n])
        lw = 1.0 + 2.5 * (k - 1 - i) / max(k - 1, 1)  # earlier graphs wider: identical curves stay visible
        _ccdf(axd, deg["out_degree"], color=palette[i % 10], lw=lw, label=f"{n} out")
        _ccdf(axd, deg["in_degree"], color=palette[i % 10], lw=lw, ls="--", label=f"{n} in")
    axc.set_xticks(np.arange(4), [c.replace("->", "\u2192") for c in classes])
    axc.set_ylabel("connection probability")
    axc.set_title("Connection probability by class", fontsize=10)
    axc.legend(fontsize=7, frameon=False)
    axd.set_yscale("log")
    axd.set_xlabel("degree (connected partners)")
    axd.set_ylabel("fraction of cells with degree \u2265 x")
    axd.set_title("Degree distributions (solid: out, dashed: in)"
                  + ("\n(earlier graphs drawn wider: equal curves stay visible)" if k > 1 else ""),
                  fontsize=10)
    axd.legend(fontsize=6, frameon=False, ncol=2)
    rec = [stats.reciprocity(graphs[n]) for n in names]
    refm = tables[names[0]].to_numpy(float).ravel()
    corr = []
    for n in names:
        m = tables[n].to_numpy(float).ravel()
        ok = np.isfinite(m) & np.isfinite(refm)
        defined = ok.sum() > 1 and m[ok].std() > 0 and refm[ok].std() > 0
        corr.append(float(np.corrcoef(m[ok], refm[ok])[0, 1]) if defined else np.nan)
    x = np.arange(k)
    axr.bar(x - 0.2, rec, 0.4, label="reciprocity", color="0.45")
    axr.bar(x + 0.2, corr, 0.4, label=f"matrix r with {names[0]}", color=E_COLOR, alpha=0.8)
    axr.set_xticks(x, names, rotation=20, ha="right")
    axr.axhline(0, color="black", lw=0.6)
    axr.set_title("Reciprocity; type-matrix correlation", fontsize=10)
    axr.set_ylim(min(0.0, np.nanmin([*rec, *corr, 0.0]) - 0.05), 1.3)
    axr.legend(fontsize=7, frameon=False, loc="upper center", ncol=2)
    for a in (axc, axd, axr):
        a.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"{names[0]} vs {', '.join(names[1:])}: {VALUE_LABELS.get(value, value)}" if k > 1
                 else f"{names[0]}: {VALUE_LABELS.get(value, value)}")
    return fig


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | Path, dpi: int | None = 120) -> Path:
    """Write ``fig`` as PNG atomically (temporary name, then rename); ``dpi=None``: the figure's.

    The picture is cropped to what is drawn plus a small margin, as Jupyter shows a figure: a
    square (equal-aspect) matrix can leave the layout a title's height short of the figure."""
    from .atomic_io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else fig.dpi, bbox_inches="tight",
                    pad_inches=0.08)
    return path


def save_graph_plots(graph: "ConnectomeGraph", folder: str | Path, bounds: LayerBounds | None = None,
                     dpi: int = 120) -> list[Path]:
    """Write the graph's standard plots as PNGs into ``folder`` (``build_graph --plots``):
    cells per type and layer, soma depths, the connectivity matrices (connection probability,
    synapses per connection, total synapses and, where the source has synapse sizes, summed
    size), layer flow and degree distributions. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        "cells_per_type_layer": lambda: cells_per_type_layer(graph),
        "soma_depths": lambda: soma_depths(graph, bounds),
        "connection_probability": lambda: connectivity_matrix(graph, "connection_probability"),
        "synapses_per_connection": lambda: connectivity_matrix(graph, "synapses_per_connection"),
        "n_synapses": lambda: connectivity_matrix(graph, "n_synapses"),
        "layer_flow": lambda: layer_flow(graph),
        "degree_distributions": lambda: degree_distributions(graph, "cell_type"),
    }
    if stats.has_synapse_sizes(graph):
        plots["summed_size"] = lambda: connectivity_matrix(graph, "summed_size")
    out = []
    for name, make in plots.items():
        out.append(save_figure(make(), folder / f"{name}.png", dpi=dpi))
    return out
