"""Peak memory of a population's synapse pull: streamed into partitioned Parquet vs one DataFrame.

    python bench/population_pull.py [--cells 10000] [--synapses 2000000] [--batch 500]

A fake minnie65 server (``tests/population_mock.py``, through caveclient's ``CAVEclientMock``)
holds ``--cells / 0.83`` cells and ``--synapses`` synapses; a population query with ``--limit``
selects ``--cells`` of them. Both pulls ask the same server for the synapses between those cells:

* ``streamed``: :meth:`PopulationSource.pull_synapses`, one request per batch of postsynaptic ids,
  each batch written as a Parquet part of the cache before the next is asked for;
* ``one DataFrame`` (the baseline): :meth:`CaveSource.fetch_synapses`, the column pull's path,
  every batch kept in memory, concatenated, conformed and sorted.

Peak memory is ``tracemalloc``'s peak of Python and NumPy allocations during each pull (the
fake server's world is allocated before tracing starts; its per-request filtering is counted in
both, the same for both). Arrow's own buffers are not traced. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _traced(run):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = run()
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak / 2**20, wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--synapses", type=int, default=2_000_000)
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)
    os.environ.setdefault("CAVE_TOKEN", "benchmark")

    import numpy as np
    import pandas as pd

    from connectomics.cache import TableCache
    from connectomics.sources.cave import CaveSource
    from connectomics.sources.population import PopulationQuery, PopulationSource
    from tests.population_mock import population_server

    n_world = int(args.cells / 0.83)
    t0 = time.perf_counter()
    with population_server(n_cells=n_world, n_syn=args.synapses, n_fragments=0, shuffle=False) as (server, client):
        setup_s = time.perf_counter() - t0
        src = PopulationSource(PopulationQuery(limit=args.cells, seed=0), client=client, batch_size=args.batch,
                               timeout_s=600, max_retries=0)
        roots = np.sort(src.resolve()["population"]["pt_root_id"].to_numpy(np.int64))
        with tempfile.TemporaryDirectory() as tmp:
            cache = TableCache(tmp, src.namespace, src.cache_version)
            files, streamed_mb, streamed_s = _traced(lambda: src.pull_synapses(cache, roots, progress=False))
            n_streamed = sum(len(pd.read_parquet(f, columns=["id"])) for f in files)
            parquet_mb = sum(f.stat().st_size for f in files) / 2**20
        base = CaveSource("minnie65_public", 1300, client=client, batch_size=args.batch, timeout_s=600, max_retries=0)
        df, base_mb, base_s = _traced(lambda: base.fetch_synapses(roots, progress=False))
        n_base = len(df)
        del df
    if n_streamed != n_base:
        print(f"mismatch: streamed {n_streamed} synapses, baseline {n_base}", file=sys.stderr)
        return 1
    batches = -(-len(roots) // args.batch)
    print(f"fake minnie65 server: {n_world} cells, {args.synapses} synapses (set up in {setup_s:.1f} s); "
          f"population of {len(roots)} cells; {n_base} synapses between them; {batches} batches of {args.batch} ids; "
          f"{len(files)} Parquet parts, {parquet_mb:.1f} MB")
    print(f"{'pull':<34}{'peak traced MB':>16}{'wall s':>9}")
    print(f"{'streamed to partitioned Parquet':<34}{streamed_mb:>16.1f}{streamed_s:>9.1f}")
    print(f"{'one DataFrame (baseline)':<34}{base_mb:>16.1f}{base_s:>9.1f}")
    print(f"ratio: {base_mb / streamed_mb:.1f}x less peak memory streamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
