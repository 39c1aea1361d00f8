"""What each mask of the controls plan gives the column: edges per projection, units without input,
the spread of fan-ins, and the inhibitory input that graded inhibition reads.

    python scripts/mask_stats.py [--seed 1] [--graph DIR]

Prints one markdown table per quantity (rows: masks; columns: projections or layers), for
``docs/results.md``. The null models are seeded as a plan's run of that seed seeds them
(``ColumnSpec.seed`` = the run's seed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphnet import ColumnSpec, plan_column  # noqa: E402

MASKS = ("connectome", "random", "degree_shuffle", "label_shuffle")


def mask_stats(graph, seed: int = 1) -> dict[str, dict]:
    """Per mask: ``{"edges": {proj: n}, "no_input": {proj: units}, "cv": {proj: s.d./mean of
    fan-in}, "inhibition": {layer: (mean, cv)}}``."""
    out = {}
    for mask in MASKS:
        plans, projs = plan_column(graph, ColumnSpec.bionic(mask=mask, seed=seed))
        st: dict[str, dict] = {"edges": {}, "no_input": {}, "cv": {}, "inhibition": {}}
        for pp in projs:
            fan_in = np.bincount(pp.post, minlength=pp.n_dst)
            st["edges"][pp.key] = len(pp.pre)
            st["no_input"][pp.key] = int((fan_in == 0).sum())
            st["cv"][pp.key] = float(fan_in.std() / fan_in.mean()) if fan_in.mean() else float("nan")
        for lp in plans:
            c = np.asarray(lp.inhibitory_input, float)
            st["inhibition"][lp.name] = (float(c.mean()), float(c.std() / c.mean()) if c.mean() else float("nan"))
        out[mask] = st
    return out


def _table(stats: dict, key: str, fmt) -> str:
    cols = list(next(iter(stats.values()))[key])
    lines = ["| mask | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for mask, st in stats.items():
        lines.append(f"| {mask} | " + " | ".join(fmt(st[key][c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="null-model seed (= a plan run's seed)")
    ap.add_argument("--graph", default="", help="graph folder (default: the bundled real column)")
    a = ap.parse_args(argv)
    if a.graph:
        from connectomics import load_graph
        graph = load_graph(a.graph)
    else:
        from connectomics.build import build_default_graph
        graph = build_default_graph()
    st = mask_stats(graph, a.seed)
    print(f"Edges per projection (seed {a.seed}):\n\n" + _table(st, "edges", str))
    print("\nUnits with no input from the projection:\n\n" + _table(st, "no_input", str))
    print("\nFan-in coefficient of variation (s.d. / mean over the target layer's units):\n\n"
          + _table(st, "cv", lambda v: f"{v:.2f}"))
    print("\nInhibitory input per unit (what graded inhibition normalises), mean (CV):\n\n"
          + _table(st, "inhibition", lambda v: f"{v[0]:.1f} ({v[1]:.2f})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
