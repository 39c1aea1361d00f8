"""The MICrONS column as a connectome reservoir: memory capacity across spectral radii, real
wiring against matched null models, and a FER-2013 readout at the best radius.

    python -m pipelines.reservoir                                  # the full sweep -> results/reservoir
    python -m pipelines.reservoir --draws 5 --input-seeds 2 --no-fer --out runs/reservoir-quick

For every network -- the real column (``connectome``) and ``--draws`` draws (seeds 1..N) of each
null model in ``--nulls`` (default the matched ones: block_random, degree_shuffle,
weight_shuffle; :mod:`graphnet.null_models`) -- and every ``rho`` in ``--rho``, the reservoir
``W = s_j n_ij`` scaled to spectral radius ``rho`` (:mod:`graphnet.reservoir`) gets its memory
capacity (:mod:`graphnet.memory_capacity`) for each input seed 1..``--input-seeds``, the seeds'
sequences run as one batch; every network sees the same inputs and ``W_in``. Then the
connectome's best ``rho`` (highest mean MC; chosen on memory capacity, never on FER-2013) is
used for every network's FER-2013 readout (:mod:`pipelines.reservoir_fer`: pixels through a fixed
random projection, trained on Training, scored on PublicTest) for the connectome and the first
``--fer-draws`` draws of each null.

Written to ``--out`` (default ``results/reservoir``): ``config.json`` (every parameter and seed,
the graph's checksum, library versions), ``memory_capacity.csv`` (one row per network, rho and
input seed), ``memory_curves.csv`` (the connectome's r^2 per delay), ``mc_summary.csv/.md`` and
``memory_capacity.png`` (:mod:`pipelines.reservoir_report`), ``fer.csv``, ``fer_summary.csv/.md``,
``fer_predictions.npz`` (each network's PublicTest predictions) and ``README.md`` (what ran, the
command, the wall time). Rows are saved after each network, so a run that stops is finished by
the same command: networks already in the CSVs of the same config are skipped; a folder holding
another config is refused (use another ``--out``). ``--fer-only`` reads FER-2013 out from the
connectome rows already in the folder (beside a memory sweep still running, or with more
``--fer-draws`` later); ``--report`` rebuilds the tables and the figure from the CSVs alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UserError, run_cli

DEFAULT_RHOS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1.1, 1.3, 1.6, 2.0)
DEFAULT_NULLS = ("block_random", "degree_shuffle", "weight_shuffle")
CONNECTOME = "connectome"


def _floats(text: str, option: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise UserError(f"{option}: no values in {text!r}")
    return vals


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_config(ns: argparse.Namespace) -> dict[str, Any]:
    """The sweep's full configuration (JSON types) from the parsed options; bad values raise
    one error naming the option."""
    from graphnet.null_models import NULL_MODELS
    from graphnet.reservoir import ReservoirConfig

    rhos = sorted(set(_floats(ns.rho, "--rho")))
    if min(rhos) <= 0:
        raise UserError(f"--rho: every spectral radius must be > 0, got {min(rhos)}")
    nulls = _names(ns.nulls) if ns.nulls.strip() else []
    bad = [n for n in nulls if n not in NULL_MODELS]
    if bad:
        raise UserError(f"--nulls: unknown null model(s) {bad}; choose from {sorted(NULL_MODELS)}")
    for opt, v, low in (("--draws", ns.draws, 0), ("--input-seeds", ns.input_seeds, 1),
                        ("--delays", ns.delays, 1), ("--train", ns.train, 2), ("--test", ns.test, 2),
                        ("--fer-steps", ns.fer_steps, 1), ("--fer-draws", ns.fer_draws, 0),
                        ("--threads", ns.threads, 1)):
        if v < low:
            raise UserError(f"{opt} must be >= {low}, got {v}")
    if ns.washout < ns.delays:
        raise UserError(f"--washout ({ns.washout}) must be >= --delays ({ns.delays})")
    if not ns.fer_input_scale > 0:
        raise UserError(f"--fer-input-scale must be > 0, got {ns.fer_input_scale}")
    outputs = "all" if ns.output_populations == "all" else _names(ns.output_populations)
    res = ReservoirConfig(rho=rhos[0], leak=ns.leak, activation=ns.activation,
                          input_populations=_names(ns.input_populations), output_populations=outputs,
                          input_scale=ns.input_scale, washout=ns.washout, seed=0,
                          backend=ns.backend, dtype=ns.dtype)
    from graphnet.memory_capacity import DEFAULT_ALPHAS as MC_ALPHAS
    from .reservoir_fer import DEFAULT_ALPHAS as FER_ALPHAS

    reservoir = res.to_dict()
    reservoir.pop("rho")
    reservoir.pop("seed")   # W_in comes from each input seed
    return {
        "graph": ns.graph or "default (the bundled real MICrONS V1 column)",
        "populations": "cell_type",
        "rhos": rhos, "nulls": nulls, "null_draw_seeds": list(range(1, ns.draws + 1)),
        "input_seeds": list(range(1, ns.input_seeds + 1)),
        "reservoir": reservoir,
        "memory_capacity": {"max_delay": ns.delays, "washout": ns.washout, "n_train": ns.train,
                            "n_test": ns.test, "input": "i.i.d. uniform [-1, 1]",
                            "ridge_alphas": list(MC_ALPHAS), "readout": "RidgeCV, alpha per delay "
                            "by leave-one-out on the training segment, standardised states"},
        "fer": None if ns.no_fer else {
            "data": ns.data, "steps": ns.fer_steps, "input_scale": ns.fer_input_scale,
            "projection_seed": ns.fer_seed, "draws_per_null": min(ns.fer_draws, ns.draws),
            "batch_size": 512, "input": "per-image standardised pixels, fixed Gaussian projection "
            "onto the input populations, held for `steps` steps", "ridge_alphas": list(FER_ALPHAS),
            "readout": "RidgeClassifierCV on standardised final readout states, alpha by "
            "leave-one-out on Training; trained on Training, scored on PublicTest",
            "rho": "the connectome's best mean memory capacity", "pixel_baseline": not ns.no_baseline},
    }


def _write_text(path: Path, text: str) -> None:
    from connectomics.atomic_io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def _load_rows(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); delete it or use another --out") from None


def _check_folder(out: Path, config: dict, graph_checksum: str) -> None:
    """Refuse a folder whose config.json is another sweep's; write ours otherwise."""
    path = out / "config.json"
    full = {**config, "graph_checksum": graph_checksum}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc}); delete it or use another --out") from None
        diff = _sweep_differences(old, full)
        if diff:
            raise UserError(f"{path} holds another sweep (differs in {diff}); use another --out "
                            "or delete that folder")
        if full["fer"] is not None and old.get("fer") != full["fer"]:   # FER added, or its draws
            _write_text(path, json.dumps({**old, "fer": full["fer"]}, indent=2) + "\n")
        return
    _write_text(path, json.dumps({**full, "versions": _versions()}, indent=2) + "\n")


def _comparable(config: dict) -> dict:
    """The fields that change a result: all but ``versions``, where the FER-2013 file lies and
    the number of FER draws (a different number only adds or leaves out networks of the same
    readout)."""
    d = {k: v for k, v in config.items() if k != "versions"}
    if isinstance(d.get("fer"), dict):
        d["fer"] = {k: v for k, v in d["fer"].items() if k not in ("draws_per_null", "data")}
    return d


def _sweep_differences(old: dict, new: dict) -> list[str]:
    """Fields in which two sweep configs differ in a way that changes a result (``fer`` absent
    from either side -- a memory-only sweep -- is no difference)."""
    a, b = _comparable(old), _comparable(new)
    if a.get("fer") is None or b.get("fer") is None:
        a.pop("fer", None)
        b.pop("fer", None)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _versions() -> dict[str, str]:
    import scipy
    import sklearn
    import torch

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip()}


def networks(config: dict) -> list[tuple[str, int]]:
    """``(null, draw)`` of every network: the connectome (draw 0), then draw 1 of each null,
    draw 2 of each null, ... (so a sweep cut short has as many draws of every null)."""
    return [(CONNECTOME, 0)] + [(n, d) for d in config["null_draw_seeds"] for n in config["nulls"]]


def network_of(graph, null: str, draw: int):
    """The units and connections (a :class:`graphnet.plan.NetworkPlan`) of one network: the
    connectome, or draw ``draw`` of null model ``null``."""
    from graphnet.plan import plan_network

    return plan_network(graph, mask="connectome" if null == CONNECTOME else null, seed=draw)


def run_memory_sweep(graph, config: dict, out: Path, progress: bool = True) -> pd.DataFrame:
    """Memory capacity of every network at every rho (rows saved after each network)."""
    from tqdm.auto import tqdm

    from graphnet.memory_capacity import memory_capacity
    from graphnet.reservoir import ReservoirConfig, connectome_reservoir, spectral_radius

    csv = out / "memory_capacity.csv"
    rows = _load_rows(csv)
    done = set() if rows is None else {
        (n, int(d)) for (n, d), g in rows.groupby(["null", "draw"])
        if len(g) == len(config["rhos"]) * len(config["input_seeds"])}
    records = [] if rows is None else rows[[(n, int(d)) in done for n, d in
                                            zip(rows["null"], rows["draw"])]].to_dict("records")
    curves = []
    mcc = config["memory_capacity"]
    todo = [nd for nd in networks(config) if nd not in done]
    bar = tqdm(todo, desc="memory capacity (networks)", disable=not progress)
    for null, draw in bar:
        t0 = time.perf_counter()
        network = network_of(graph, null, draw)
        radius = spectral_radius(network.count_matrix())
        new = []
        for rho in config["rhos"]:
            rc = ReservoirConfig(rho=rho, seed=0, **config["reservoir"])
            res = connectome_reservoir(network, rc, radius=radius)
            mc = memory_capacity(res, config["input_seeds"], max_delay=mcc["max_delay"],
                                 washout=mcc["washout"], n_train=mcc["n_train"], n_test=mcc["n_test"],
                                 input_scale=rc.input_scale, alphas=mcc["ridge_alphas"])
            for s, v in zip(mc.seeds, mc.mc):
                new.append({"null": null, "draw": draw, "rho": rho, "input_seed": s, "mc": float(v),
                            "radius_unscaled": radius, "edges": len(network.pre),
                            "synapses": float(network.n_synapses.sum())})
            if null == CONNECTOME:
                for s, r2 in zip(mc.seeds, mc.r2):
                    curves += [{"rho": rho, "input_seed": s, "delay": k + 1, "r2": float(v)}
                               for k, v in enumerate(r2)]
        for r in new:
            r["seconds_network"] = time.perf_counter() - t0
        records += new
        _write_text(csv, pd.DataFrame(records).to_csv(index=False, float_format="%.6g"))
        if curves:
            _write_text(out / "memory_curves.csv", pd.DataFrame(curves).to_csv(index=False, float_format="%.5g"))
            curves = []
        bar.set_postfix(net=f"{null}:{draw}", s=f"{time.perf_counter() - t0:.1f}")
    return pd.DataFrame(records)


def best_rho(mc_rows: pd.DataFrame) -> float:
    """The rho at which the connectome's memory capacity (mean over input seeds) is highest."""
    real = mc_rows[mc_rows["null"] == CONNECTOME].groupby("rho")["mc"].mean()
    return float(real.idxmax())


def run_fer(graph, config: dict, rho: float, out: Path, progress: bool = True,
            cache_root: str = "data_cache") -> tuple[pd.DataFrame, float | None]:
    """FER-2013 readout of the connectome and the first draws of each null at ``rho``; returns
    the rows and the pixel baseline's accuracy (``None`` when not asked for)."""
    from tqdm.auto import tqdm

    from graphnet.reservoir import ReservoirConfig, connectome_reservoir, spectral_radius

    from .fer2013 import load_fer2013
    from .reservoir_fer import fer_readout, pixel_baseline

    fc = config["fer"]
    ds = load_fer2013(fc["data"], cache_root)
    train, test = ds.split("Training"), ds.split("PublicTest")
    csv, npz = out / "fer.csv", out / "fer_predictions.npz"
    rows = _load_rows(csv)
    records = [] if rows is None else rows.to_dict("records")
    preds: dict[str, np.ndarray] = {}
    if npz.exists():
        with np.load(npz) as z:
            preds = {k: z[k] for k in z.files if k != "labels"}
    done = {(r["null"], int(r["draw"])) for r in records}
    # draw-major, so a run cut short has the same number of draws of every null
    wanted = [(CONNECTOME, 0)] + [(n, d) for d in config["null_draw_seeds"][:fc["draws_per_null"]]
                                  for n in config["nulls"]]
    baseline = None
    if fc["pixel_baseline"]:
        bfile = out / "fer_pixel_baseline.json"
        if bfile.exists():
            baseline = json.loads(bfile.read_text())["accuracy"]
        else:
            t0 = time.perf_counter()
            b = pixel_baseline(train, test, fc["ridge_alphas"])
            baseline = b.accuracy
            _write_text(bfile, json.dumps({"accuracy": b.accuracy, "train_accuracy": b.train_accuracy,
                                           "alpha": b.alpha, "seconds": time.perf_counter() - t0}) + "\n")
    for null, draw in tqdm([w for w in wanted if w not in done], desc="FER-2013 (networks)",
                           disable=not progress):
        t0 = time.perf_counter()
        network = network_of(graph, null, draw)
        rc = ReservoirConfig(rho=rho, seed=0, **config["reservoir"])
        res = connectome_reservoir(network, rc, radius=spectral_radius(network.count_matrix()))
        r = fer_readout(res, train, test, steps=fc["steps"], input_scale=fc["input_scale"],
                        seed=fc["projection_seed"], batch_size=fc["batch_size"],
                        alphas=fc["ridge_alphas"], progress=progress)
        records.append({"null": null, "draw": draw, "rho": rho, "accuracy": r.accuracy,
                        "train_accuracy": r.train_accuracy, "alpha": r.alpha, "n_train": r.n_train,
                        "n_test": r.n_test, "seconds": time.perf_counter() - t0})
        preds[f"{null}_{draw}"] = r.predictions
        from connectomics.atomic_io import atomic_write

        atomic_write(npz, lambda f: np.savez_compressed(f, labels=test[1].astype(np.int8), **preds))
        _write_text(csv, pd.DataFrame(records).to_csv(index=False, float_format="%.6g"))
    return pd.DataFrame(records), baseline


def write_readme(out: Path, config: dict, argv: list[str], seconds: dict[str, float], rho: float | None,
                 mc_rows: pd.DataFrame, fer_rows: pd.DataFrame | None) -> None:
    n_nets = mc_rows.groupby(["null", "draw"]).ngroups
    per_net = mc_rows.groupby(["null", "draw"])["seconds_network"].first()
    lines = [
        "# Connectome reservoir sweep", "",
        "Written by `python -m pipelines.reservoir` (module doc: what each file holds).", "",
        "Command:", "", "```", "python -m pipelines.reservoir " + " ".join(shlex.quote(a) for a in argv), "```", "",
        f"- networks: the real column and {len(config['null_draw_seeds'])} draws (seeds "
        f"{config['null_draw_seeds'][0] if config['null_draw_seeds'] else '-'}.."
        f"{config['null_draw_seeds'][-1] if config['null_draw_seeds'] else '-'}) of each of "
        f"{', '.join(config['nulls']) or 'no null'}: {n_nets} networks in `memory_capacity.csv`",
        f"- rho: {', '.join(f'{r:g}' for r in config['rhos'])}; input seeds "
        f"{config['input_seeds']} (the same `u` and `W_in` for every network)",
        f"- memory capacity: delays 1..{config['memory_capacity']['max_delay']}, washout "
        f"{config['memory_capacity']['washout']}, train {config['memory_capacity']['n_train']}, test "
        f"{config['memory_capacity']['n_test']} steps; reservoir {json.dumps(config['reservoir'])}",
        f"- compute time, summed over the networks in the CSVs (every invocation that wrote them): "
        f"memory capacity {per_net.sum() / 60:.1f} min ({per_net.median():.1f} s per network for "
        f"all rho, median; {per_net.min():.0f}-{per_net.max():.0f} s on a shared machine)"
        + ("" if fer_rows is None or not len(fer_rows) else
           f", FER-2013 {fer_rows['seconds'].sum() / 60:.1f} min"),
        f"- this invocation: {seconds.get('memory', 0) / 60:.1f} min of memory sweep, "
        f"{seconds.get('fer', 0) / 60:.1f} min of FER-2013",
    ]
    if fer_rows is not None and len(fer_rows):
        lines.append(f"- FER-2013 at rho = {rho:g} (the connectome's best memory capacity): "
                     f"{len(fer_rows)} networks in `fer.csv` (the connectome and draws "
                     f"{', '.join(str(d) for d in sorted(set(fer_rows.loc[fer_rows['null'] != CONNECTOME, 'draw'])))}"
                     f" of each null), "
                     f"{fer_rows['seconds'].median():.0f} s per network (median)")
    lines += ["", "Tables: `mc_summary.md`, `fer_summary.md`; figure: `memory_capacity.png`; "
              "report: `REPORT.md` (written by hand from these files).", ""]
    _write_text(out / "README.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m pipelines.reservoir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/reservoir", help="results folder (default results/reservoir)")
    ap.add_argument("--graph", default=None, help="a graph folder (default: the bundled real column)")
    ap.add_argument("--rho", default=",".join(f"{r:g}" for r in DEFAULT_RHOS), help="spectral radii, comma-separated")
    ap.add_argument("--nulls", default=",".join(DEFAULT_NULLS), help="null models, comma-separated ('' for none)")
    ap.add_argument("--draws", type=int, default=20, help="draws (seeds 1..N) of each null (default 20)")
    ap.add_argument("--input-seeds", type=int, default=5, help="input seeds 1..N (default 5)")
    ap.add_argument("--delays", type=int, default=60, help="largest delay K (default 60)")
    ap.add_argument("--washout", type=int, default=500)
    ap.add_argument("--train", type=int, default=2000, help="training steps of the readouts")
    ap.add_argument("--test", type=int, default=1000, help="held-out steps the readouts are scored on")
    ap.add_argument("--leak", type=float, default=1.0)
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--input-scale", type=float, default=0.1)
    ap.add_argument("--input-populations", default="4P")
    ap.add_argument("--output-populations", default="23P,5P-IT,5P-ET,5P-NP", help="or 'all'")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--data", default="data_cache/fer2013/fer2013.csv", help="FER-2013 CSV or image folder")
    ap.add_argument("--fer-steps", type=int, default=20, help="steps each image is held")
    ap.add_argument("--fer-input-scale", type=float, default=1.0)
    ap.add_argument("--fer-seed", type=int, default=0, help="seed of the pixel projection")
    ap.add_argument("--fer-draws", type=int, default=20, help="draws of each null read out on FER-2013")
    ap.add_argument("--no-fer", action="store_true", help="memory capacity only")
    ap.add_argument("--no-baseline", action="store_true", help="skip the pixel-readout baseline")
    ap.add_argument("--fer-only", action="store_true", help="skip the memory sweep: read FER-2013 "
                    "out at the best rho of the connectome's rows already in --out")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--report", action="store_true", help="only rebuild the tables and the figure "
                    "of --out from its CSV files")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ns = ap.parse_args(argv)
    return run_cli("reservoir", lambda: _main(ns, argv), debug=ns.debug)


def rebuild_report(out: Path) -> list[Path]:
    """The tables and the figure of a sweep folder, from its CSV files alone."""
    from .reservoir_report import write_tables

    mc_rows = _load_rows(out / "memory_capacity.csv")
    if mc_rows is None:
        raise UserError(f"{out}: no memory_capacity.csv (run the sweep first)")
    fer_rows = _load_rows(out / "fer.csv")
    bfile = out / "fer_pixel_baseline.json"
    baseline = json.loads(bfile.read_text())["accuracy"] if bfile.exists() else None
    return write_tables(out, mc_rows, fer_rows, baseline)


def _main(ns: argparse.Namespace, argv: list[str]) -> int:
    import torch

    if ns.report:
        paths = rebuild_report(Path(ns.out))
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    from threadpoolctl import threadpool_limits

    config = build_config(ns)
    if ns.fer_only and config["fer"] is None:
        raise UserError("--fer-only and --no-fer exclude each other")
    if config["fer"] is not None:
        from .fer2013 import resolve_source

        resolve_source(config["fer"]["data"])     # a missing file fails before the sweep
    torch.set_num_threads(ns.threads)
    with threadpool_limits(limits=ns.threads):
        from connectomics.build import build_default_graph
        from connectomics.graph import load_graph

        graph = load_graph(ns.graph) if ns.graph else build_default_graph()
        out = Path(ns.out)
        _check_folder(out, config, graph.checksum())
        from graphnet.plan import plan_network
        from graphnet.reservoir import population_units, ReservoirConfig

        probe = plan_network(graph)
        rc = ReservoirConfig(rho=1.0, **config["reservoir"])
        population_units(probe, rc.input_populations, "input_populations")
        population_units(probe, rc.output_populations, "output_populations")
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        if ns.fer_only:
            mc_rows = _load_rows(out / "memory_capacity.csv")
            real = None if mc_rows is None else mc_rows[mc_rows["null"] == CONNECTOME]
            if real is None or len(real) != len(config["rhos"]) * len(config["input_seeds"]):
                raise UserError(f"--fer-only: {out / 'memory_capacity.csv'} lacks the connectome's "
                                "memory capacity at every rho; run the sweep first")
        else:
            mc_rows = run_memory_sweep(graph, config, out, progress=not ns.no_progress)
        seconds["memory"] = time.perf_counter() - t0
        from .reservoir_report import write_tables

        fer_rows, baseline, rho = None, None, best_rho(mc_rows)
        write_tables(out, mc_rows, None, None)
        if config["fer"] is not None:
            t0 = time.perf_counter()
            fer_rows, baseline = run_fer(graph, config, rho, out, progress=not ns.no_progress)
            seconds["fer"] = time.perf_counter() - t0
        paths = write_tables(out, mc_rows, fer_rows, baseline)
        write_readme(out, config, argv, seconds, rho if fer_rows is not None else None, mc_rows, fer_rows)
    print(f"best rho (connectome MC): {rho:g}")
    print((out / "mc_summary.md").read_text())
    if (out / "fer_summary.md").exists() and fer_rows is not None:
        print((out / "fer_summary.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
