"""Tables and the figure of a reservoir sweep (:mod:`pipelines.reservoir`), from its CSV rows alone.

* :func:`mc_summary`: per spectral radius ``rho``, the connectome's memory capacity (mean over
  input seeds), and per null model the median and 5-95 % range over its draws (each draw's MC
  also a mean over the same input seeds), the connectome's rank among the draws and the
  permutation p-values of that rank.
* :func:`fer_summary`: the FER-2013 readout accuracy of the connectome and of each null's draws.
* :func:`sweep_figure`: MC against rho, the connectome as a line, each null's 5-95 % band
  shaded with its median dashed; below, the connectome's rank among each null's draws.

Rank 1 is the highest MC. With ``N`` draws, ``p_high = (1 + #{draws >= connectome}) / (N + 1)``
is the one-sided permutation p-value of "the connectome is higher than this null gives" (rank 1
of 21 is p = 1/21 ~ 0.048) and ``p_low`` the same for "lower".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CONNECTOME = "connectome"


def network_means(rows: pd.DataFrame, value: str = "mc") -> pd.DataFrame:
    """One row per (null, draw, rho): ``value`` averaged over input seeds."""
    return (rows.groupby(["null", "draw", "rho"], as_index=False)[value].mean())


def rank_stats(real: float, draws: np.ndarray) -> dict:
    """The connectome's rank (1 = highest) among ``draws`` and the one-sided permutation p-values."""
    draws = np.asarray(draws, dtype=float)
    n = len(draws)
    return {"rank": int(1 + (draws > real).sum()), "of": n + 1,
            "p_high": float((1 + (draws >= real).sum()) / (n + 1)),
            "p_low": float((1 + (draws <= real).sum()) / (n + 1))}


def mc_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (rho, null): connectome MC mean and s.d. over input seeds, the null's draws' median,
    5 %, 95 %, min, max, the connectome's rank and p-values (module doc)."""
    means = network_means(rows)
    real = means[means["null"] == CONNECTOME].set_index("rho")["mc"]
    real_sd = rows[rows["null"] == CONNECTOME].groupby("rho")["mc"].std(ddof=1)
    out = []
    for null in [n for n in means["null"].unique() if n != CONNECTOME]:
        for rho, grp in means[means["null"] == null].groupby("rho"):
            if rho not in real.index:
                continue
            v = grp["mc"].to_numpy()
            out.append({"rho": float(rho), "null": null, "connectome_mc": float(real[rho]),
                        "connectome_sd_seeds": float(real_sd.get(rho, np.nan)), "draws": len(v),
                        "null_median": float(np.median(v)), "null_q05": float(np.quantile(v, 0.05)),
                        "null_q95": float(np.quantile(v, 0.95)), "null_min": float(v.min()),
                        "null_max": float(v.max()), **rank_stats(float(real[rho]), v)})
    return pd.DataFrame(out).sort_values(["rho", "null"]).reset_index(drop=True)


def fer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per null: the connectome's PublicTest accuracy and the draws' mean, s.d., min, max, the
    connectome's rank and p-values."""
    real = rows[rows["null"] == CONNECTOME]["accuracy"]
    if len(real) != 1:
        raise ValueError(f"fer rows hold {len(real)} connectome rows, expected 1")
    acc = float(real.iloc[0])
    out = []
    for null, grp in rows[rows["null"] != CONNECTOME].groupby("null"):
        v = grp["accuracy"].to_numpy()
        out.append({"null": null, "rho": float(grp["rho"].iloc[0]), "connectome_accuracy": acc,
                    "draws": len(v), "null_mean": float(v.mean()),
                    "null_sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                    "null_min": float(v.min()), "null_max": float(v.max()), **rank_stats(acc, v)})
    return pd.DataFrame(out)


def mc_markdown(summary: pd.DataFrame) -> str:
    """The MC table, one row per rho, one column group per null."""
    nulls = list(dict.fromkeys(summary["null"]))
    head = "| rho | connectome MC (s.d. over input seeds) | " + " | ".join(
        f"{n}: median [5-95 %], rank, p_high" for n in nulls) + " |"
    lines = [head, "| --- " * (2 + len(nulls)) + "|"]
    for rho, grp in summary.groupby("rho"):
        g = grp.set_index("null")
        r0 = grp.iloc[0]
        cells = [f"{rho:g}", f"{r0['connectome_mc']:.2f} ({r0['connectome_sd_seeds']:.2f})"]
        for n in nulls:
            if n not in g.index:
                cells.append("")
                continue
            r = g.loc[n]
            cells.append(f"{r['null_median']:.2f} [{r['null_q05']:.2f}-{r['null_q95']:.2f}], "
                         f"{int(r['rank'])}/{int(r['of'])}, {r['p_high']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fer_markdown(summary: pd.DataFrame, baseline: float | None = None) -> str:
    lines = ["| null | rho | connectome acc. (%) | draws | null mean ± s.d. (%) | null min-max (%) | "
             "rank | p_high | p_low |", "| --- " * 9 + "|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['null']} | {r['rho']:g} | {100 * r['connectome_accuracy']:.2f} | "
                     f"{int(r['draws'])} | {100 * r['null_mean']:.2f} ± {100 * r['null_sd']:.2f} | "
                     f"{100 * r['null_min']:.2f}-{100 * r['null_max']:.2f} | {int(r['rank'])}/{int(r['of'])} | "
                     f"{r['p_high']:.3f} | {r['p_low']:.3f} |")
    if baseline is not None:
        lines.append(f"\nThe same classifier on the standardised pixels (no reservoir): "
                     f"{100 * baseline:.2f} %.")
    return "\n".join(lines) + "\n"


_COLORS = ("tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown")


def sweep_figure(rows: pd.DataFrame) -> Figure:
    """Top: MC vs rho (connectome line, each null's 5-95 % band and median); bottom: the
    connectome's rank among each null's draws (1 = highest)."""
    summary = mc_summary(rows)
    means = network_means(rows)
    real = means[means["null"] == CONNECTOME].sort_values("rho")
    fig = Figure(figsize=(7.5, 7.0))
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    nulls = list(dict.fromkeys(summary["null"]))
    n_draws = 0
    for i, null in enumerate(nulls):
        s = summary[summary["null"] == null].sort_values("rho")
        c = _COLORS[i % len(_COLORS)]
        n_draws = max(n_draws, int(s["draws"].max()))
        ax.fill_between(s["rho"], s["null_q05"], s["null_q95"], color=c, alpha=0.25, lw=0,
                        label=f"{null} (5-95 %, {int(s['draws'].max())} draws)")
        ax.plot(s["rho"], s["null_median"], color=c, ls="--", lw=1, gid=f"null:{null}")
        # nulls side by side around each rho, so equal ranks stay visible
        dx = 0.012 * (i - (len(nulls) - 1) / 2) * (s["rho"].max() - s["rho"].min() or 1.0)
        ax2.plot(s["rho"] + dx, s["rank"], color=c, marker="o", ms=4, lw=1, label=null, gid=f"rank:{null}")
    ax.plot(real["rho"], real["mc"], color="black", marker="o", ms=4, lw=1.8, label="connectome",
            gid="connectome")
    ax.set_ylabel("memory capacity (sum of r² over delays)")
    ax.set_title("Memory capacity of the MICrONS column reservoir vs matched nulls")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    top = max(n_draws + 1, 2)
    ax2.axhline(1, color="grey", lw=0.8, ls=":")
    ax2.axhline(top, color="grey", lw=0.8, ls=":")
    ax2.set_ylim(top + 0.5, 0.5)
    ax2.set_ylabel(f"connectome rank\n(1 = highest, of {top})")
    ax2.set_xlabel("spectral radius ρ")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, ncol=len(nulls))
    fig.tight_layout()
    return fig


def write_tables(folder: Path, mc_rows: pd.DataFrame, fer_rows: pd.DataFrame | None,
                 baseline: float | None) -> list[Path]:
    """``mc_summary.csv/.md``, ``memory_capacity.png`` and, with FER rows, ``fer_summary.csv/.md``
    in ``folder`` (each written atomically)."""
    from connectomics.atomic_io import atomic_write
    from connectomics.plots import save_figure

    def text(path: Path, s: str) -> Path:
        atomic_write(path, lambda f: f.write(s.encode()))
        return path

    summary = mc_summary(mc_rows)
    paths = [text(folder / "mc_summary.csv", summary.to_csv(index=False, float_format="%.6g")),
             text(folder / "mc_summary.md", mc_markdown(summary)),
             save_figure(sweep_figure(mc_rows), folder / "memory_capacity.png", dpi=110)]
    if fer_rows is not None and len(fer_rows) and (fer_rows["null"] == CONNECTOME).any() \
            and (fer_rows["null"] != CONNECTOME).any():
        fs = fer_summary(fer_rows)
        paths += [text(folder / "fer_summary.csv", fs.to_csv(index=False, float_format="%.6g")),
                  text(folder / "fer_summary.md", fer_markdown(fs, baseline))]
    return paths
