"""Benchmark: synapse table -> cell-type graph, streaming vs the plain pandas way.

    python bench/build_graph.py                       # 1M, 10M, 100M rows (pandas baseline up to 10M)
    python bench/build_graph.py --sizes 1e6 1e7 --baseline-max 1e7

For each size a synthetic table in the ``synapses_pni_2`` schema (id, pre/post root ids, size,
ctr position x/y/z in nm) is written once to Parquet (``bench/out/``, row groups of 1M rows),
over 4,000 cells with the column's type mix plus 30 % of endpoints outside the cell set. Each
method runs in a fresh Python process; the table reports its wall time and peak resident memory
(``ru_maxrss``):

* ``stream``: :func:`connectomics.aggregate.aggregate_type_graph` over the Parquet row groups,
  reading only pre/post/size;
* ``pandas``: read the whole table, merge the cell types twice, groupby (type pair and cell pair).

Both must give the same type graph (checked on the synapse and connected-pair totals).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_CELLS = 4000


def cells_table(path: Path, seed: int = 0) -> pd.DataFrame:
    """4,000 cells drawn with the census's type/layer mix (node columns)."""
    from connectomics import census
    from connectomics.cell_types import ei_class

    rng = np.random.default_rng(seed)
    c = census.census_table()
    rows = c.loc[rng.choice(len(c), size=N_CELLS, p=c["n_cells"] / c["n_cells"].sum())].reset_index(drop=True)
    df = pd.DataFrame({
        "root_id": 864691135000000000 + rng.choice(10**9, N_CELLS, replace=False),
        "nucleus_id": np.arange(N_CELLS), "cell_type": rows["cell_type"], "mtype": rows["mtype"],
        "layer": rows["layer"], "ei": rows["cell_type"].map(ei_class), "x_nm": 0.0, "y_nm": 0.0,
        "z_nm": 0.0, "depth_um": 0.0,
    })
    df.to_parquet(path, index=False)
    return df


def synapse_table(path: Path, rows: int, roots: np.ndarray, seed: int = 0, group: int = 1_000_000) -> None:
    """A synthetic ``synapses_pni_2`` table of ``rows`` rows, written row group by row group."""
    rng = np.random.default_rng(seed)
    outside = rng.integers(864691136000000000, 864691137000000000, size=len(roots) * 3 // 7)
    pool = np.concatenate([roots, outside])
    schema = pa.schema([("id", pa.int64()), ("pre_pt_root_id", pa.int64()), ("post_pt_root_id", pa.int64()),
                        ("size", pa.int64()), ("ctr_pt_position_x", pa.float64()),
                        ("ctr_pt_position_y", pa.float64()), ("ctr_pt_position_z", pa.float64())])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as w:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            w.write_table(pa.table({
                "id": np.arange(start, start + n, dtype=np.int64),
                "pre_pt_root_id": rng.choice(pool, n), "post_pt_root_id": rng.choice(pool, n),
                "size": rng.integers(100, 20000, n),
                "ctr_pt_position_x": rng.uniform(2e5, 1.4e6, n), "ctr_pt_position_y": rng.uniform(3e5, 1.1e6, n),
                "ctr_pt_position_z": rng.uniform(6e5, 1.1e6, n),
            }, schema=schema))
    os.replace(tmp, path)


def run_stream(table: Path, cells: Path) -> dict:
    from connectomics.aggregate import aggregate_type_graph, iter_parquet_batches

    nodes = pd.read_parquet(cells)
    g = aggregate_type_graph(iter_parquet_batches([table], batch_rows=1_000_000), nodes)
    return {"synapses": sum(d["n_synapses"] for *_, d in g.edges(data=True)),
            "pairs": sum(d["connected_pairs"] for *_, d in g.edges(data=True)), "type_edges": g.number_of_edges()}


def run_pandas(table: Path, cells: Path) -> dict:
    from connectomics.graph import population_key

    nodes = pd.read_parquet(cells)
    nodes["population"] = population_key(nodes["cell_type"], nodes["layer"])
    syn = pd.read_parquet(table)
    syn = syn.merge(nodes[["root_id", "population"]].rename(columns={"root_id": "pre_pt_root_id",
                                                                       "population": "pre_population"}))
    syn = syn.merge(nodes[["root_id", "population"]].rename(columns={"root_id": "post_pt_root_id",
                                                                       "population": "post_population"}))
    pairs = syn.groupby(["pre_pt_root_id", "post_pt_root_id", "pre_population", "post_population"]).size()
    types = syn.groupby(["pre_population", "post_population"]).agg(n_synapses=("size", "size"),
                                                                    summed_size=("size", "sum"))
    conn = pairs.groupby(level=["pre_population", "post_population"]).size()
    return {"synapses": int(types["n_synapses"].sum()), "pairs": int(conn.sum()), "type_edges": len(types)}


def child(method: str, table: str, cells: str) -> None:
    import resource

    t0 = time.perf_counter()
    out = {"stream": run_stream, "pandas": run_pandas}[method](Path(table), Path(cells))
    out["seconds"] = time.perf_counter() - t0
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def measure(method: str, table: Path, cells: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", method, str(table), str(cells)],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8])
    p.add_argument("--baseline-max", type=float, default=1e7, help="largest size the pandas way runs at")
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    cells = out / "bench_cells.parquet"
    roots = cells_table(cells)["root_id"].to_numpy()
    lines = ["| rows | method | seconds | peak MB | synapses kept | connected pairs | speed-up |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    print(f"cpu cores: {os.cpu_count()}  cells: {N_CELLS}")
    for size in map(int, args.sizes):
        table = out / f"synapses_{size}.parquet"
        if not table.exists():
            t0 = time.perf_counter()
            synapse_table(table, size, roots)
            print(f"wrote {table.name} ({table.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f} s")
        s = measure("stream", table, cells)
        b = measure("pandas", table, cells) if size <= args.baseline_max else None
        speed = f"{b['seconds'] / s['seconds']:.1f}x" if b and "seconds" in b and "seconds" in s else ""
        if b and "synapses" in b and "synapses" in s:
            assert (b["synapses"], b["pairs"]) == (s["synapses"], s["pairs"]), (b, s)
        for name, r in (("stream", s), ("pandas", b)):
            if r is None:
                lines.append(f"| {size:,} | {name} | not run (above --baseline-max) | | | | |")
            elif "error" in r:
                lines.append(f"| {size:,} | {name} | failed: {r['error']} | | | | |")
            else:
                lines.append(f"| {size:,} | {name} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
                             f"{r['synapses']:,} | {r['pairs']:,} | {speed if name == 'stream' else ''} |")
        print("\n".join(lines[-2:]), flush=True)
    report = "\n".join(lines)
    (out / "build_graph.md").write_text(report + "\n")
    print("\n" + report)


if __name__ == "__main__":
    main()
