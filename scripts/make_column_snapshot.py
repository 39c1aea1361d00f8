"""Derive the bundled MICrONS V1 column snapshot from the shared source files.

    python scripts/make_column_snapshot.py [--shared ../shared/data/microns/v1_column_connectome]
                                           [--out connectomics/data/v1_column]

Reads (see ``SOURCE.md`` beside them):

* ``connectome_neurons.csv``: the 1,351 column neurons in matrix order (root id, nucleus id,
  coarse type, m-type, E/I class, nucleus volume);
* ``network_synapses_matrix.npz``: synapse counts, **rows postsynaptic**, columns presynaptic
  (transposed here to pre x post);
* ``neurons_1718.csv``: soma positions (voxels of 4 x 4 x 40 nm) at materialization v1718,
  joined on nucleus id (stable across versions).

Writes ``cells.parquet`` (one row per neuron, matrix order), ``connections.parquet`` (one row per
connected ordered pair: pre and post nucleus id, synapse count; sorted by pre then post matrix
index), ``README.md`` and ``manifest.json`` (sha256 and size of every file, row counts, the inputs'
sha256, provenance, citation, writer). No synapse sizes: the matrix has none.

The output is byte-for-byte reproducible for a given pyarrow version (recorded in the manifest):
Parquet written from Arrow tables without pandas or Arrow schema metadata, fixed compression,
dictionary and statistics options, no timestamps; JSON with sorted keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data" / "microns" / "v1_column_connectome"
DEFAULT_OUT = REPO / "connectomics" / "data" / "v1_column"
INPUTS = ("connectome_neurons.csv", "network_synapses_matrix.npz", "neurons_1718.csv")
SNAPSHOT_VERSION = 1
VOXEL_NM = (4.0, 4.0, 40.0)

#: pyarrow.parquet.write_table options: fixed, so the bytes depend only on the data and pyarrow.
WRITER_OPTIONS = dict(compression="zstd", compression_level=9, use_dictionary=True,
                      write_statistics=False, version="2.6", data_page_version="1.0",
                      store_schema=False, row_group_size=1 << 20)

PROVENANCE = {
    "connectome_neurons.csv": {
        "repository": "github.com/tmoldwin/minicolumn", "path": "connectome_neurons.csv",
        "commit": "d64aca4de54755d11d18225cd422efe6adff8613",
        "unchanged_at": "d5749440096b9d22432b43bce867a0a2dcc807dd"},
    "network_synapses_matrix.npz": {
        "repository": "github.com/tmoldwin/minicolumn", "path": "network_synapses_matrix.npz",
        "commit": "d64aca4de54755d11d18225cd422efe6adff8613",
        "unchanged_at": "d5749440096b9d22432b43bce867a0a2dcc807dd",
        "note": "scipy.sparse CSR, 1351 x 1351 synapse counts, rows postsynaptic (transposed here)"},
    "neurons_1718.csv": {
        "repository": "github.com/deangeckt/neurons_explorer", "path": "public/neurons_1718.csv",
        "commit": "e07607044b0ac84ec308456503b0e93c982df5f5",
        "file_last_changed": "d58fc1a4d7724b0a52c10a9f06eabcc7a807b660",
        "note": "soma positions pt_position_x/y/z in voxels (4 x 4 x 40 nm) at materialization v1718"},
}
CITATION = [
    "MICrONS Consortium et al. Functional connectomics spanning multiple areas of mouse visual "
    "cortex. Nature 640 (2025).",
    "Schneider-Mizell, C. M. et al. Inhibitory specificity from a connectomic census of mouse "
    "visual cortex. Nature 640 (2025). (the V1 column: cell set allen_v1_column_types_slanted_ref)",
    "Citation policy of the MICrONS release: https://www.microns-explorer.org/citation-policy",
]

README = """\
# The MICrONS V1 column (bundled snapshot)

Real MICrONS (`minnie65_public`) data: the 1,351 proofread neurons of the 100-um V1 column of
Schneider-Mizell et al. and the number of synapses from each onto each other (141,452 synapses
over 75,251 connected ordered pairs). Derived by `scripts/make_column_snapshot.py` from public
files (sources and commits in `manifest.json`); re-running it reproduces these files byte for byte
with the pyarrow version named there. The `column` source of `connectomics` serves them as CAVE
tables, verifying every file's sha256 against `manifest.json` first.

- `cells.parquet`: one row per neuron (matrix order): `nucleus_id`, `root_id` (the root ids the
  synapse matrix was built with), `cell_type` (coarse type as the source spells it: 23P, 4P,
  5P-IT, 5P-PT = 5P-ET, 5P-NP, 6P-IT, 6P-CT, 6P-U, WM-P, BC, MC, BPC, NGC, Unsure E, Unsure I),
  `mtype` (column m-type), `ei_class` (E/I), `volume_um3` (nucleus volume),
  `pt_position_x/y/z` (soma position at materialization v1718, voxels of 4 x 4 x 40 nm).
- `connections.parquet`: one row per connected ordered pair: `pre_nucleus_id`,
  `post_nucleus_id`, `n_synapses`. There are no per-synapse sizes or positions: graphs built from
  this snapshot record synapse size as missing (NaN), never invented.

Cite the MICrONS Consortium (Nature, 2025) and Schneider-Mizell et al. (Nature, 2025) for these
data; see https://www.microns-explorer.org/citation-policy. No licence is stated by the
repositories the files were copied from; the underlying data are the public MICrONS release.
"""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def column_tables(shared: Path) -> tuple[pa.Table, pa.Table]:
    """(cells, connections) Arrow tables from the three source files in ``shared``."""
    neurons = pd.read_csv(shared / "connectome_neurons.csv", index_col=0)
    if not (neurons.index.to_numpy() == np.arange(len(neurons))).all():
        raise ValueError(f"{shared / 'connectome_neurons.csv'}: rows are not in matrix order 0..n-1")
    v1718 = pd.read_csv(shared / "neurons_1718.csv", usecols=["nucleus_id", "pt_position_x",
                                                             "pt_position_y", "pt_position_z"])
    pos = neurons[["nucleus_id"]].merge(v1718, on="nucleus_id", how="left", validate="one_to_one")
    if pos[["pt_position_x", "pt_position_y", "pt_position_z"]].isna().any().any():
        missing = pos.loc[pos["pt_position_x"].isna(), "nucleus_id"].iloc[0]
        raise ValueError(f"{shared / 'neurons_1718.csv'}: no soma position for nucleus {missing}")
    counts = sp.load_npz(shared / "network_synapses_matrix.npz")
    n = len(neurons)
    if counts.shape != (n, n):
        raise ValueError(f"network_synapses_matrix.npz: shape {counts.shape}, expected ({n}, {n})")
    pre_post = sp.coo_matrix(counts.T)  # rows post -> transpose to pre x post
    order = np.lexsort((pre_post.col, pre_post.row))
    pre, post, nsyn = pre_post.row[order], pre_post.col[order], pre_post.data[order]
    keep = nsyn > 0
    nuc = neurons["nucleus_id"].to_numpy(np.int64)
    cells = pa.table({
        "nucleus_id": pa.array(nuc, pa.int64()),
        "root_id": pa.array(neurons["root_id"].to_numpy(np.int64), pa.int64()),
        "cell_type": pa.array(neurons["cell_type"].astype(str).tolist(), pa.string()),
        "mtype": pa.array(neurons["mtype"].astype(str).tolist(), pa.string()),
        "ei_class": pa.array(neurons["clf_type"].astype(str).tolist(), pa.string()),
        "volume_um3": pa.array(neurons["volume"].to_numpy(np.float64), pa.float64()),
        **{f"pt_position_{a}": pa.array(pos[f"pt_position_{a}"].to_numpy(np.int64), pa.int64())
           for a in "xyz"},
    })
    connections = pa.table({
        "pre_nucleus_id": pa.array(nuc[pre[keep]], pa.int64()),
        "post_nucleus_id": pa.array(nuc[post[keep]], pa.int64()),
        "n_synapses": pa.array(nsyn[keep].astype(np.int32), pa.int32()),
    })
    return cells, connections


def make_snapshot(shared: Path = DEFAULT_SHARED, out: Path = DEFAULT_OUT) -> dict:
    """Write the snapshot files into ``out`` (created) and return the manifest."""
    shared, out = Path(shared), Path(out)
    for name in INPUTS:
        if not (shared / name).is_file():
            raise FileNotFoundError(f"{shared / name}: missing (see SOURCE.md of the shared data)")
    cells, connections = column_tables(shared)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for name, table in (("cells.parquet", cells), ("connections.parquet", connections)):
        pq.write_table(table.replace_schema_metadata(None), out / name, **WRITER_OPTIONS)
        files[name] = {"rows": table.num_rows}
    (out / "README.md").write_text(README)
    files["README.md"] = {}
    for name, entry in files.items():
        entry.update(sha256=sha256_of(out / name), bytes=(out / name).stat().st_size)
    manifest = {
        "snapshot": "MICrONS minnie65_public V1 column: cells and synapse counts",
        "snapshot_version": SNAPSHOT_VERSION,
        "files": files,
        "n_cells": cells.num_rows,
        "n_connections": connections.num_rows,
        "n_synapses": int(connections["n_synapses"].to_numpy().sum()),
        "voxel_nm": list(VOXEL_NM),
        "synapse_sizes": "none: the source matrix holds per-pair synapse counts only",
        "inputs": {name: {"sha256": sha256_of(shared / name), **PROVENANCE[name]} for name in INPUTS},
        "citation": CITATION,
        "writer": {"script": "scripts/make_column_snapshot.py", "pyarrow": pa.__version__,
                   "options": {k: v for k, v in WRITER_OPTIONS.items()}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="folder of the source files")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="snapshot folder to write")
    args = p.parse_args(argv)
    try:
        m = make_snapshot(args.shared, args.out)
    except (OSError, ValueError) as e:
        print(f"make_column_snapshot: error: {e}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in m["files"].values())
    print(f"{args.out}: {m['n_cells']} cells, {m['n_connections']} connections, "
          f"{m['n_synapses']} synapses; {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
