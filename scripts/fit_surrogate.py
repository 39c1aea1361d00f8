"""Re-fit the surrogate column to a real column graph: ``python scripts/fit_surrogate.py [--graph DIR]``.

Writes ``connectomics/data/surrogate/`` (read by :mod:`connectomics.census`):

``census.csv``
    (mtype, cell_type, layer, n_cells): the real column's joint counts, layer from soma depth.
``pmax_by_type.csv``
    per (pre type, post type): possible ordered pairs, connected pairs, observed connection
    probability ``p_observed``, the surrogate geometry's mean Gaussian factor ``gauss_factor`` =
    E[exp(-r^2 / 2 sigma^2)] for two somata uniform in the column's 100 x 100 um lateral square
    (sigma by pre/post E/I, :data:`connectomics.census.SIGMA_UM`), and the fitted
    ``pmax = min(1, p_observed / gauss_factor)``, so that the surrogate drawn at the column's size
    reproduces ``p_observed`` in expectation.
``synapses_per_connection.csv``
    per presynaptic E/I class: connected pairs, synapses, mean synapses per connected pair.

The default graph is the bundled real MICrONS V1 column (``connectomics.load_default_graph`` or
``python -m pipelines.build_graph``). Output is deterministic: running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate

OUT = Path(__file__).resolve().parents[1] / "connectomics" / "data" / "surrogate"


def gauss_factor(sigma_um: float, width_um: float) -> float:
    """E[exp(-r^2 / 2 sigma^2)] for two points uniform in a ``width_um`` square (r lateral, um).

    The per-axis difference of two U(0, W) has the triangular density (W - |d|) / W^2; the two axes
    are independent, so the 2-D factor is the square of the 1-D one."""
    one, _ = integrate.quad(lambda d: 2 * (width_um - d) / width_um**2 * np.exp(-d * d / (2 * sigma_um**2)),
                            0.0, width_um)
    return float(one * one)


def fit(nodes: pd.DataFrame, edges: pd.DataFrame, sigma_um: dict, width_um: float) -> dict[str, pd.DataFrame]:
    """The three tables (see the module docstring) from a graph's ``nodes`` and ``edges``."""
    types = nodes["cell_type"].astype(str).to_numpy()
    ei = nodes["ei"].astype(str).to_numpy()
    census = (nodes.assign(mtype=nodes["mtype"].fillna("none").astype(str))
              .groupby(["mtype", "cell_type", "layer"]).size().rename("n_cells").reset_index()
              .sort_values(["cell_type", "layer", "mtype"], kind="stable").reset_index(drop=True))
    names = sorted(set(types))
    n_of = pd.Series(types).value_counts()
    ei_of = dict(zip(types, ei))
    conn = pd.crosstab(types[edges["pre"].to_numpy()], types[edges["post"].to_numpy()])
    conn = conn.reindex(index=names, columns=names, fill_value=0)
    rows = []
    for a in names:
        for b in names:
            possible = int(n_of[a] * n_of[b] - (n_of[a] if a == b else 0))
            connected = int(conn.loc[a, b])
            p = connected / possible if possible else 0.0
            g = gauss_factor(sigma_um[ei_of[a]][ei_of[b]], width_um)
            rows.append((a, b, possible, connected, round(p, 8), round(g, 8), round(min(1.0, p / g), 8)))
    pmax = pd.DataFrame(rows, columns=["pre_type", "post_type", "n_possible", "n_connected",
                                       "p_observed", "gauss_factor", "pmax"])
    pre_ei = ei[edges["pre"].to_numpy()]
    spc = (pd.DataFrame({"pre_ei": pre_ei, "n_synapses": edges["n_synapses"].to_numpy()})
           .groupby("pre_ei")["n_synapses"].agg(n_connected="size", n_synapses="sum").reset_index())
    spc["mean_per_connection"] = (spc["n_synapses"] / spc["n_connected"]).round(6)
    return {"census": census, "pmax_by_type": pmax, "synapses_per_connection": spc}


def main(argv: list[str] | None = None) -> int:
    from connectomics import load_graph
    from connectomics.census import COLUMN_WIDTH_UM, SIGMA_UM

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--graph", required=True, help="graph folder of the real column (build_graph --out)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    g = load_graph(args.graph)
    tables = fit(g.nodes, g.edges, SIGMA_UM, COLUMN_WIDTH_UM)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, df in tables.items():
        path = out / f"{name}.csv"
        path.write_text(df.to_csv(index=False, lineterminator="\n"))
        sums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = json.loads((Path(args.graph) / "meta.json").read_text()) if (Path(args.graph) / "meta.json").exists() else {}
    fitted_to = {k: meta.get(k) for k in ("source", "snapshot", "fingerprint", "n_cells", "n_edges", "n_synapses")}
    (out / "checksums.json").write_text(json.dumps({"fitted_to": fitted_to, "sha256": sums},
                                                   indent=1, sort_keys=True) + "\n")
    clipped = tables["pmax_by_type"].query("p_observed > gauss_factor")
    print(f"wrote {out}: {len(tables['census'])} census rows, {len(tables['pmax_by_type'])} type pairs"
          f" ({len(clipped)} clipped at pmax 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
