"""Plots of a column's graphs, shared by the notebook, ``build_graph --plots`` and training reports.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
registry, no ``plt.show``), so it works under any backend, Agg included; save it with
``fig.savefig(path)`` or let Jupyter display it.

Graph plots
    :func:`cells_per_type_layer`, :func:`soma_depths`, :func:`connectivity_matrix`,
    :func:`layer_flow`, :func:`degree_distributions`, :func:`compare_null_models`,
    :func:`mask_images` (a compiled ``graphnet`` column; graphnet is only imported lazily there:
    connectomics never imports graphnet at module level) and :func:`save_graph_plots`.
Tables behind them
    :func:`cell_counts`, :func:`population_order`, :func:`connectivity_table`, :func:`layer_table`,
    :func:`degrees`, :func:`ei_connection_probability`, :func:`reciprocity`.
Training reports (matplotlib/numpy only)
    :func:`training_curves`, :func:`confusion_matrix`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from .cell_types import COARSE_TYPES, MTYPES
from .layers import LAYERS, LayerBounds

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
    "n_synapses": "synapses",
    "connected_pairs": "connected pairs",
}
#: values plotted on a log colour scale by default
LOG_VALUES = ("summed_size", "n_synapses", "connected_pairs")


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _type_rank(t: str) -> tuple[int, str]:
    vocab = COARSE_TYPES + MTYPES
    return (vocab.index(t), t) if t in vocab else (len(vocab), t)


def _layer_rank(layer: str) -> tuple[int, str]:
    return (LAYERS.index(layer), layer) if layer in LAYERS else (len(LAYERS), layer)


def _layers_present(values) -> list[str]:
    return sorted(set(map(str, values)), key=_layer_rank)


def _bounds_of(graph: "ConnectomeGraph", bounds: LayerBounds | None) -> LayerBounds:
    if bounds is not None:
        return bounds
    b = graph.meta.get("layer_bounds_um") if graph.meta else None
    return LayerBounds(tuple(float(x) for x in b)) if b else LayerBounds()


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def cell_counts(graph: "ConnectomeGraph") -> pd.DataFrame:
    """Cells per cell type (rows, canonical order) and layer (columns, pia to white matter)."""
    tab = pd.crosstab(graph.nodes["cell_type"], graph.nodes["layer"])
    rows = sorted(tab.index, key=_type_rank)
    cols = sorted(tab.columns, key=_layer_rank)
    return tab.loc[rows, cols]


def population_order(graph: "ConnectomeGraph", order: str | Sequence[str] = "ei",
                     by: str = "population") -> list[str]:
    """Row/column order of a type x type matrix.

    ``order``: ``"ei"`` (excitatory then inhibitory; canonical type order, then layer),
    ``"layer"`` (by layer, E before I within a layer), ``"sorted"`` (alphabetical) or an explicit
    list of names (a subset is allowed). ``by``: ``"population"`` (``"<type>|<layer>"``) or
    ``"cell_type"``.
    """
    names, ei, layer = _groups(graph, by)
    if not isinstance(order, str):
        order = [str(x) for x in order]
        unknown = [x for x in order if x not in names]
        if unknown:
            raise ValueError(f"unknown {by}(s) {unknown}; known: {names}")
        return order
    ctype = {n: n.split("|")[0] for n in names}
    if order == "ei":
        key = lambda n: (ei[n] != "E", _type_rank(ctype[n]), _layer_rank(layer[n]))  # noqa: E731
    elif order == "layer":
        key = lambda n: (_layer_rank(layer[n]), ei[n] != "E", _type_rank(ctype[n]))  # noqa: E731
    elif order == "sorted":
        key = str
    else:
        raise ValueError(f"order={order!r}: use 'ei', 'layer', 'sorted' or a list of names")
    return sorted(names, key=key)


def _groups(graph: "ConnectomeGraph", by: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(names, E/I of each, layer of each: the population's, or the type's commonest)."""
    if by == "population":
        tg = graph.type_graph
        return (list(tg.nodes), {n: d["ei"] for n, d in tg.nodes(data=True)},
                {n: d["layer"] for n, d in tg.nodes(data=True)})
    if by == "cell_type":
        nodes = graph.nodes
        g = nodes.groupby("cell_type", sort=True)
        ei = g["ei"].first().to_dict()
        layer = g["layer"].agg(lambda s: s.value_counts().index[0]).to_dict()
        return list(ei), ei, layer
    raise ValueError(f"by={by!r}: use 'population' or 'cell_type'")


def connectivity_table(graph: "ConnectomeGraph", value: str = "connection_probability",
                       order: str | Sequence[str] = "ei", by: str = "population") -> pd.DataFrame:
    """The type x type matrix (rows = presynaptic, columns = postsynaptic) of one edge value.

    ``value``: ``connection_probability`` (connected / possible pairs, autapses excluded),
    ``synapses_per_connection``, ``summed_size``, ``n_synapses`` or ``connected_pairs``.
    Unconnected pairs are 0, except ``synapses_per_connection`` (NaN: undefined). ``by="cell_type"``
    pools the layers of each type (sums, then the ratios of the sums).
    """
    if value not in VALUE_LABELS:
        raise ValueError(f"value={value!r}: choose one of {list(VALUE_LABELS)}")
    names = population_order(graph, order, by)
    idx = {n: i for i, n in enumerate(names)}
    k = len(names)
    sums = {c: np.zeros((k, k)) for c in ("n_synapses", "summed_size", "connected_pairs")}
    tg = graph.type_graph
    group = {n: (n if by == "population" else d["cell_type"]) for n, d in tg.nodes(data=True)}
    for a, b, d in tg.edges(data=True):
        i, j = idx.get(group[a]), idx.get(group[b])
        if i is None or j is None:
            continue
        for c in sums:
            sums[c][i, j] += d[c]
    if value in sums:
        mat = sums[value]
    elif value == "synapses_per_connection":
        with np.errstate(invalid="ignore", divide="ignore"):
            mat = np.where(sums["connected_pairs"] > 0,
                           sums["n_synapses"] / np.maximum(sums["connected_pairs"], 1), np.nan)
    else:  # connection_probability
        size = np.zeros(k)
        for n, d in tg.nodes(data=True):
            if group[n] in idx:
                size[idx[group[n]]] += d["n_cells"]
        possible = np.outer(size, size) - np.diag(size)
        with np.errstate(invalid="ignore", divide="ignore"):
            mat = np.where(possible > 0, sums["connected_pairs"] / np.maximum(possible, 1), 0.0)
    return pd.DataFrame(mat, index=pd.Index(names, name="pre"), columns=pd.Index(names, name="post"))


def layer_table(graph: "ConnectomeGraph", pre_ei: str | None = "E") -> pd.DataFrame:
    """Layer-to-layer connectivity from the neuron-level graph.

    One row per (pre_layer, post_layer) of the layers present, pia to white matter:
    ``n_synapses, summed_size, connected_pairs, possible_pairs, connection_probability,
    synapses_per_connection``. ``pre_ei="E"``/``"I"`` keeps only excitatory/inhibitory presynaptic
    cells (``None``: all).
    """
    nodes, e = graph.nodes, graph.edges
    layers = _layers_present(nodes["layer"])
    code = {l: i for i, l in enumerate(layers)}
    lay = nodes["layer"].map(code).to_numpy(np.int64)
    pre_ok = np.ones(len(nodes), bool) if pre_ei is None else (nodes["ei"] == pre_ei).to_numpy()
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    keep = pre_ok[pre]
    k = len(layers)
    key = lay[pre[keep]] * k + lay[post[keep]]
    nsyn = np.bincount(key, weights=e["n_synapses"].to_numpy(float)[keep], minlength=k * k)
    size = np.bincount(key, weights=e["summed_size"].to_numpy(float)[keep], minlength=k * k)
    pairs = np.bincount(key, minlength=k * k).astype(float)
    n_pre = np.bincount(lay[pre_ok], minlength=k).astype(float)
    n_all = np.bincount(lay, minlength=k).astype(float)
    possible = (np.outer(n_pre, n_all) - np.diag(n_pre)).ravel()
    a, b = np.divmod(np.arange(k * k), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "pre_layer": [layers[i] for i in a], "post_layer": [layers[j] for j in b],
            "n_synapses": nsyn.astype(np.int64), "summed_size": size,
            "connected_pairs": pairs.astype(np.int64), "possible_pairs": possible.astype(np.int64),
            "connection_probability": np.where(possible > 0, pairs / np.maximum(possible, 1), 0.0),
            "synapses_per_connection": np.where(pairs > 0, nsyn / np.maximum(pairs, 1), np.nan),
        })


def degrees(graph: "ConnectomeGraph") -> pd.DataFrame:
    """Per cell: ``in_degree``/``out_degree`` (connected partners) and ``in_synapses``/
    ``out_synapses``, beside ``cell_type, layer, ei``."""
    n, e = graph.n_nodes, graph.edges
    pre, post = e["pre"].to_numpy(), e["post"].to_numpy()
    w = e["n_synapses"].to_numpy(float)
    return pd.DataFrame({
        "cell_type": graph.nodes["cell_type"].to_numpy(), "layer": graph.nodes["layer"].to_numpy(),
        "ei": graph.nodes["ei"].to_numpy(),
        "in_degree": np.bincount(post, minlength=n), "out_degree": np.bincount(pre, minlength=n),
        "in_synapses": np.bincount(post, weights=w, minlength=n).astype(np.int64),
        "out_synapses": np.bincount(pre, weights=w, minlength=n).astype(np.int64),
    })


def ei_connection_probability(graph: "ConnectomeGraph") -> dict[str, float]:
    """Connection probability between the classes: ``{"E->E", "E->I", "I->E", "I->I"}``."""
    ei = (graph.nodes["ei"] == "I").to_numpy().astype(np.int64)
    e = graph.edges
    key = ei[e["pre"].to_numpy()] * 2 + ei[e["post"].to_numpy()]
    pairs = np.bincount(key, minlength=4)
    n = np.bincount(ei, minlength=2).astype(float)
    out = {}
    for k, name in enumerate(("E->E", "E->I", "I->E", "I->I")):
        a, b = divmod(k, 2)
        possible = n[a] * n[b] - (n[a] if a == b else 0)
        out[name] = float(pairs[k] / possible) if possible > 0 else float("nan")
    return out


def reciprocity(graph: "ConnectomeGraph") -> float:
    """Fraction of connected ordered pairs whose reverse pair is connected too."""
    e = graph.edges
    if not len(e):
        return float("nan")
    n = graph.n_nodes
    pre, post = e["pre"].to_numpy(np.int64), e["post"].to_numpy(np.int64)
    return float(np.isin(post * n + pre, pre * n + post).mean())


# ------------------------------------------------------------------------------------------------
# graph plots
# ------------------------------------------------------------------------------------------------
def cells_per_type_layer(graph: "ConnectomeGraph") -> Figure:
    """Stacked bars: cells per coarse type, split by layer; type names coloured by E/I."""
    tab = cell_counts(graph)
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
    types = sorted(nodes["cell_type"].unique(), key=_type_rank)
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
    table = connectivity_table(graph, value, order, by)
    # a count-only source (the bundled MICrONS column) has no synapse sizes: missing, not zero
    sizes_unknown = value == "summed_size" and bool(np.isnan(table.to_numpy()).any())
    if sizes_unknown:
        table = table * np.nan
    _, ei, _ = _groups(graph, by)
    k = len(table)
    side = max(5.5, 0.3 * k + 3.0)
    fig = _figure(side + 1.3, side)
    ax = fig.add_subplot()
    _draw_matrix(fig, ax, table, value, ei, log=log,
                 annotate=(k <= 12) if annotate is None else annotate,
                 fontsize=7 if k > 12 else 8)
    src = graph.meta.get("source", "") if graph.meta else ""
    ax.set_title(f"{VALUE_LABELS[value].capitalize()}, {by.replace('_', ' ')} x {by.replace('_', ' ')}"
                 + (f" ({src})" if src else ""), pad=24)
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
    table = layer_table(graph, pre_ei)
    layers = _layers_present(graph.nodes["layer"])
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
        g = (nodes["cell_type"].astype(str) + "|" + nodes["layer"].astype(str)).to_numpy()
        return g, population_order(graph, "ei")
    if by not in nodes.columns:
        raise ValueError(f"by={by!r}: use a node column (cell_type, layer, ei, mtype), "
                         "'population' or None")
    g = nodes[by].astype(str).to_numpy()
    rank = {"cell_type": _type_rank, "mtype": _type_rank, "layer": _layer_rank}.get(by, str)
    return g, sorted(set(g), key=rank)


def degree_distributions(graph: "ConnectomeGraph", by: str | None = "cell_type") -> Figure:
    """In- and out-degree (connected partners per cell) per group, as box plots (whiskers 5-95%,
    dots = mean), boxes coloured by E/I. ``by``: a node column (``cell_type``, ``layer``, ``ei``,
    ``mtype``), ``"population"`` or ``None`` (all cells: histograms)."""
    deg = degrees(graph)
    groups, names = _group_values(graph, by)
    fig = _figure(max(8.0, 0.45 * len(names) * 2 + 3.0), 4.5)
    axes = fig.subplots(1, 2, sharey=True)
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
                      fontsize=8 if len(names) <= 12 else 7)
        for lab, n in zip(ax.get_xticklabels(), names):
            lab.set_color(EI_COLORS.get(ei.get(n), "black"))
        ax.set_title(f"{title} per {by.replace('_', ' ')}")
        ax.set_xlabel(by.replace("_", " "))
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("connected partners per cell")
    axes[0].tick_params(labelleft=True)
    return fig


def _ccdf(ax, vals: np.ndarray, **kw) -> None:
    v = np.sort(np.asarray(vals, float))
    if not len(v):
        return
    ax.step(v, 1.0 - np.arange(len(v)) / len(v), where="post", **kw)


def compare_null_models(graphs: Mapping[str, "ConnectomeGraph"], value: str = "connection_probability",
                        order: str | Sequence[str] = "ei") -> Figure:
    """The connectome beside its null models (first entry = reference).

    Top row: each graph's population x population ``value`` matrix on one shared colour scale.
    Bottom: E/I class connection probabilities; in- and out-degree distributions
    (complementary CDFs); reciprocity and the correlation of each matrix with the reference's.
    """
    if not graphs:
        raise ValueError("compare_null_models needs at least one graph")
    names = list(graphs)
    ref = graphs[names[0]]
    rows = population_order(ref, order) if isinstance(order, str) else list(order)
    tables = {}
    for n, g in graphs.items():
        t = connectivity_table(g, value, "ei")
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
    fig = _figure(max(12.0, 4.2 * k), 9.5)
    gs = fig.add_gridspec(2, 1, height_ratios=[1.25, 1.0])
    top = gs[0].subgridspec(1, k)
    bottom = gs[1].subgridspec(1, 3)
    ei = {n: d["ei"] for n, d in ref.type_graph.nodes(data=True)}
    im = None
    for i, n in enumerate(names):
        ax = fig.add_subplot(top[0, i])
        im = _draw_matrix(fig, ax, tables[n], value, ei, norm=norm, colorbar=False, fontsize=5,
                          right_labels=False)
        ax.set_title(n, pad=20)
        if i:
            ax.set_ylabel("")
    cb = fig.colorbar(im, ax=fig.axes, shrink=0.8, location="right", pad=0.01) if im is not None else None
    if cb is not None:
        cb.set_label(VALUE_LABELS.get(value, value))
    palette = [mcolors.to_hex(c) for c in mpl.colormaps["tab10"].colors]
    axc, axd, axr = (fig.add_subplot(bottom[0, j]) for j in range(3))
    classes = ("E->E", "E->I", "I->E", "I->I")
    w = 0.8 / k
    for i, n in enumerate(names):
        p = ei_connection_probability(graphs[n])
        axc.bar(np.arange(4) + (i - (k - 1) / 2) * w, [p[c] for c in classes], w, label=n,
                color=palette[i % 10])
        deg = degrees(graphs[n])
        lw = 1.0 + 2.5 * (k - 1 - i) / max(k - 1, 1)  # earlier graphs wider: identical curves stay visible
        _ccdf(axd, deg["out_degree"], color=palette[i % 10], lw=lw, label=f"{n} out")
        _ccdf(axd, deg["in_degree"], color=palette[i % 10], lw=lw, ls="--", label=f"{n} in")
    axc.set_xticks(np.arange(4), [c.replace("->", "\u2192") for c in classes])
    axc.set_ylabel("connection probability")
    axc.set_title("Connection probability by class")
    axc.legend(fontsize=7, frameon=False)
    axd.set_yscale("log")
    axd.set_xlabel("degree (connected partners)")
    axd.set_ylabel("fraction of cells with degree \u2265 x")
    axd.set_title("Degree distributions (solid: out, dashed: in)")
    axd.text(0.98, 0.02, "degree-preserving nulls overlap the connectome", transform=axd.transAxes,
             ha="right", va="bottom", fontsize=7, color="0.4")
    axd.legend(fontsize=6, frameon=False, ncol=2)
    rec = [reciprocity(graphs[n]) for n in names]
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
    axr.set_title("Reciprocity; type-matrix correlation")
    axr.set_ylim(min(0.0, np.nanmin([*rec, *corr, 0.0]) - 0.05), 1.3)
    axr.legend(fontsize=7, frameon=False, loc="upper center", ncol=2)
    for a in (axc, axd, axr):
        a.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"Connectome vs null models: {VALUE_LABELS.get(value, value)}")
    return fig


# ------------------------------------------------------------------------------------------------
# compiled column (graphnet; imported lazily)
# ------------------------------------------------------------------------------------------------
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


def mask_images(column: Any, dpi: int | None = None) -> Figure:
    """Each masked projection of a compiled ``graphnet`` column as an image (rows = postsynaptic
    units, columns = presynaptic units; red = excitatory, blue = inhibitory presynaptic unit),
    populations separated by grey lines, titled with its shape, edges, density and the
    dense/sparse backend the compiler chose. Top row: projections between layers; bottom row:
    within-layer projections. The dense input projection (``nn.Linear``) is not shown.

    ``dpi`` (default: enough pixels for one per unit, 100-300) is the figure's resolution.
    """
    from graphnet import CorticalColumn  # lazy: connectomics never imports graphnet at load

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


# ------------------------------------------------------------------------------------------------
# training reports (matplotlib/numpy only)
# ------------------------------------------------------------------------------------------------
_SPLITS = ("train", "val", "valid", "validation", "test", "eval")


def _split_metric(name: str) -> tuple[str, str]:
    """``"val_loss"``/``"val/loss"``/``"loss_val"`` -> ("loss", "val"); ``"lr"`` -> ("lr", "")."""
    low = name.lower()
    for s in _SPLITS:
        for sep in ("_", "/", "."):
            if low.startswith(s + sep):
                return name[len(s) + 1:], s
            if low.endswith(sep + s):
                return name[: -len(s) - 1], s
    return name, ""


def training_curves(metrics_df: Any, x: str | None = None, metrics: Sequence[str] | None = None) -> Figure:
    """One panel per metric (``train_loss``/``val_loss`` share the "loss" panel, etc.).

    ``metrics_df``: a pandas DataFrame, a dict of columns or a list of row dicts. ``x``: the
    x column (default ``epoch``, else ``step``, else the row number). NaN entries (metrics logged
    on some rows only) are skipped per line. Only numpy and matplotlib are used.
    """
    if isinstance(metrics_df, (list, tuple)):
        keys: list[str] = []
        for r in metrics_df:
            keys += [k for k in r if k not in keys]
        cols = {k: np.array([r.get(k, np.nan) for r in metrics_df], dtype=float) for k in keys}
    else:
        cols = {str(k): np.asarray(metrics_df[k]) for k in list(metrics_df.keys())}
    if not cols:
        raise ValueError("training_curves: no columns")
    n = len(next(iter(cols.values())))
    if x is None:
        x = next((c for c in ("epoch", "step", "iteration") if c in cols), None)
    xs = np.asarray(cols[x], dtype=float) if x else np.arange(n, dtype=float)
    skip = {x, "epoch", "step", "iteration", "time", "wall_time"}
    names = list(metrics) if metrics is not None else [
        c for c in cols if c not in skip and np.issubdtype(np.asarray(cols[c]).dtype, np.number)]
    panels: dict[str, list[tuple[str, str]]] = {}
    for c in names:
        base, split = _split_metric(c)
        panels.setdefault(base, []).append((c, split))
    k = max(len(panels), 1)
    ncols = min(k, 3)
    nrows = -(-k // ncols)
    fig = _figure(4.2 * ncols, 3.3 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    style = {"train": "-", "val": "-", "valid": "-", "validation": "-", "test": "--", "eval": "-"}
    for ax, (base, lines) in zip(axes, panels.items()):
        for c, split in lines:
            y = np.asarray(cols[c], dtype=float)
            ok = np.isfinite(y) & np.isfinite(xs)
            ax.plot(xs[ok], y[ok], style.get(split, "-"), marker="o" if ok.sum() <= 30 else None,
                    ms=3, label=split or c)
        ax.set_title(base)
        ax.set_xlabel(x or "row")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
        if "loss" in base.lower() and all(np.nanmin(np.asarray(cols[c], float)) > 0 for c, _ in lines):
            y_all = np.concatenate([np.asarray(cols[c], float) for c, _ in lines])
            y_all = y_all[np.isfinite(y_all)]
            if len(y_all) and y_all.max() / y_all.min() > 30:
                ax.set_yscale("log")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle("Training curves")
    return fig


def confusion_matrix(cm: Any, class_names: Sequence[str], normalize: bool = True,
                     title: str | None = None) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted). ``normalize``: each row divided
    by its total (recall on the diagonal), counts written beside; the title gives the accuracy."""
    cm = np.asarray(cm, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"cm {cm.shape} must be square and match {len(class_names)} class names")
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = np.where(rows > 0, cm / np.maximum(rows, 1e-300), 0.0) if normalize else cm
    k = len(class_names)
    side = max(4.5, 0.55 * k + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    ax.set_xticks(np.arange(k), list(class_names), rotation=45, ha="right")
    ax.set_yticks(np.arange(k), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        thresh = 0.5 * (shown.max() if shown.size else 1)
        for (i, j), v in np.ndenumerate(shown):
            txt = f"{v:.2f}\n({int(cm[i, j])})" if normalize else f"{int(v)}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7 if k > 8 else 8,
                    color="white" if v > thresh else "black")
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("fraction of true class" if normalize else "count")
    ax.set_title(f"{title or 'Confusion matrix'} (accuracy {acc:.1%}, n = {int(total)})")
    return fig


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | Path, dpi: int | None = 120) -> Path:
    """Write ``fig`` as PNG atomically (temporary name, then rename); ``dpi=None``: the figure's."""
    from .cache import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else fig.dpi)
    return path


def save_graph_plots(graph: "ConnectomeGraph", folder: str | Path, bounds: LayerBounds | None = None,
                     dpi: int = 120) -> list[Path]:
    """Write the graph's standard plots as PNGs into ``folder`` (``build_graph --plots``):
    cells per type and layer, soma depths, the three connectivity matrices, layer flow and
    degree distributions. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = {
        "cells_per_type_layer": lambda: cells_per_type_layer(graph),
        "soma_depths": lambda: soma_depths(graph, bounds),
        "connection_probability": lambda: connectivity_matrix(graph, "connection_probability"),
        "synapses_per_connection": lambda: connectivity_matrix(graph, "synapses_per_connection"),
        "summed_size": lambda: connectivity_matrix(graph, "summed_size"),
        "layer_flow": lambda: layer_flow(graph),
        "degree_distributions": lambda: degree_distributions(graph, "cell_type"),
    }
    out = []
    for name, make in plots.items():
        out.append(save_figure(make(), folder / f"{name}.png", dpi=dpi))
    return out
