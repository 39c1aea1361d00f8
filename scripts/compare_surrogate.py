"""The surrogate column against the real MICrONS V1 column: ``python scripts/compare_surrogate.py``.

Connection probability (connected ordered pairs / possible ordered pairs) per population pair —
the paper's layers A = 4P, B = 23P, C = L5 pyramidal (5P-IT/ET/NP), D = L6 pyramidal
(6P-IT/CT/U, WM-P), all excitatory (E) and inhibitory (I) cells and the inhibitory types — in
the real column (the bundled snapshot), the surrogate as re-fitted (seeds 0-2) and the surrogate
before the re-fit (published V1DD pmax, commit 556ed95; counts kept in
``results/surrogate_vs_real/v1dd_surrogate_counts.csv``, made by this script's ``group_counts``).
Writes ``results/surrogate_vs_real/{groups.csv, surrogate_vs_real.png}`` and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "surrogate_vs_real"
GROUPS: dict[str, tuple[str, ...] | None] = {
    "A": ("4P",), "B": ("23P",), "C": ("5P-IT", "5P-ET", "5P-NP"), "D": ("6P-IT", "6P-CT", "6P-U", "WM-P"),
    "BC": ("BC",), "MC": ("MC",), "BPC": ("BPC",), "NGC": ("NGC",), "E": None, "I": None,
}
PAIRS: tuple[tuple[str, str], ...] = (
    ("A", "B"), ("B", "C"), ("C", "D"), ("A", "A"), ("B", "B"), ("C", "C"), ("D", "D"), ("B", "A"),
    ("D", "A"), ("E", "E"), ("E", "I"), ("I", "E"), ("I", "I"), ("BC", "E"), ("MC", "E"), ("BPC", "I"),
    ("BPC", "E"), ("NGC", "E"), ("BC", "BC"), ("MC", "BC"), ("BPC", "MC"),
)


def _members(types: np.ndarray, ei: np.ndarray, group: str) -> np.ndarray:
    t = GROUPS[group]
    return ei == group if t is None else np.isin(types, ("5P-PT",) + t if "5P-ET" in t else t)


def group_counts(types: np.ndarray, ei: np.ndarray, pre: np.ndarray, post: np.ndarray, label: str) -> pd.DataFrame:
    """Connected and possible ordered pairs per population pair; ``pre``/``post`` are the node
    indices of each connected pair (one entry per pair)."""
    rows = []
    for a, b in PAIRS:
        ma, mb = _members(types, ei, a), _members(types, ei, b)
        rows.append({"pair": f"{a} → {b}", "graph": label, "connected": int((ma[pre] & mb[post]).sum()),
                     "possible": int(ma.sum() * mb.sum() - (ma & mb).sum())})
    return pd.DataFrame(rows)


def collect(seeds: int) -> pd.DataFrame:
    from connectomics.build import build_default_graph
    from connectomics.sources.surrogate import generate_column

    g = build_default_graph(source="column")
    n = g.nodes
    frames = [group_counts(n["cell_type"].to_numpy(), n["ei"].to_numpy(), g.edges["pre"].to_numpy(),
                           g.edges["post"].to_numpy(), "real")]
    for seed in range(seeds):
        col = generate_column(seed)
        c, s = col.cells, col.synapses
        idx = pd.Series(np.arange(len(c)), index=c["root_id"])
        pairs = s[["pre_pt_root_id", "post_pt_root_id"]].drop_duplicates()
        frames.append(group_counts(c["cell_type"].to_numpy(), c["ei"].to_numpy(),
                                   idx[pairs["pre_pt_root_id"]].to_numpy(), idx[pairs["post_pt_root_id"]].to_numpy(),
                                   f"surrogate s{seed}"))
    old = OUT / "v1dd_surrogate_counts.csv"
    if old.exists():
        frames.append(pd.read_csv(old))
    d = pd.concat(frames, ignore_index=True)
    d["p"] = d["connected"] / d["possible"]
    d["kind"] = d["graph"].str.replace(r" s\d+$", "", regex=True)
    t = d.groupby(["pair", "kind"], sort=False)["p"].agg(["mean", "std"]).unstack("kind")
    t.columns = [f"{k} {m}" for m, k in t.columns]
    return t.loc[[f"{a} → {b}" for a, b in PAIRS]]


def figure(t: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("real", "surrogate", "v1dd surrogate") if f"{k} mean" in t.columns]
    colors = {"real": "black", "surrogate": "tab:orange", "v1dd surrogate": "tab:blue"}
    fig, ax = plt.subplots(figsize=(12, 4.2), layout="constrained")
    x = np.arange(len(t))
    w = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        ax.bar(x + (i - (len(kinds) - 1) / 2) * w, 100 * t[f"{k} mean"], w,
               yerr=100 * t[f"{k} std"].fillna(0), label={"surrogate": "surrogate (re-fitted)", "v1dd surrogate": "surrogate before the re-fit (V1DD pmax)"}.get(k, k),
               color=colors[k], capsize=1.5)
    ax.set_xticks(x, list(t.index), rotation=60, ha="right")
    ax.set_ylabel("connection probability (%)")
    ax.set_title("Real MICrONS V1 column vs surrogate: connection probability per population pair (mean ± s.d. over seeds)")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = collect(args.seeds)
    t.to_csv(out / "groups.csv", float_format="%.6f")
    figure(t, out / "surrogate_vs_real.png")
    kinds = [c[: -len(" mean")] for c in t.columns if c.endswith(" mean")]
    lines = ["| pair | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
    for pair, row in t.iterrows():
        cells = [f"{100 * row[k + ' mean']:.2f}" + ("" if np.isnan(row[k + " std"]) else f" ± {100 * row[k + ' std']:.2f}")
                 for k in kinds]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    (out / "groups.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
