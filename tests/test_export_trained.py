"""A trained run's column exported as a SONATA circuit: its effective weights as ``syn_weight``,
read back by libsonata, equal to what the column applies (feedforward and recurrent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphnet import ColumnSpec
from pipelines.evaluate import load_run_model
from pipelines.export import main as export_main
from pipelines.train import train
from tests.conftest import tiny_cfg, train_env

libsonata = pytest.importorskip("libsonata", reason="libsonata (dev extra) reads the export back")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return train_env(tmp_path_factory.mktemp("export_trained"))


@pytest.mark.parametrize("kind", ["counts", "recurrent"])
def test_trained_syn_weight_reads_back(env, tmp_path, kind):
    if kind == "counts":
        cfg = tiny_cfg(env, "exp-counts", weights="counts", hebbian_rate=0.0, epochs=1)
    else:
        cfg = tiny_cfg(env, "exp-recurrent", column=ColumnSpec.recurrent(steps=3, readout_steps=1),
                       hebbian_rate=0.0, homeostasis=False, epochs=1)
    train(cfg)
    out = tmp_path / "circuit"
    assert export_main(["sonata", "--run", cfg.out, "--out", str(out), "--checkpoint", "final"]) == 0
    model, _, _ = load_run_model(cfg.out, "final")
    table = model.column.connection_table()
    want = {(int(a), int(b)): w for a, b, w in zip(table["pre"], table["post"], table["weight"])}
    pop = libsonata.EdgeStorage(str(out / "edges.h5")).open_population("microns_to_microns")
    assert pop.size == len(table) > 0
    sel = libsonata.Selection([(0, pop.size)])
    got = dict(zip(zip(pop.source_nodes(sel).tolist(), pop.target_nodes(sel).tolist()),
                   pop.get_attribute("syn_weight", sel).tolist()))
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-6)
    # the weights carry Dale's signs: inhibitory presynaptic cells only in the recurrent column
    nodes = libsonata.NodeStorage(str(out / "nodes.h5")).open_population("microns")
    ei = np.asarray(nodes.get_attribute("ei", libsonata.Selection([(0, nodes.size)])))
    src = pop.source_nodes(sel)
    w = pop.get_attribute("syn_weight", sel)
    assert (w[ei[src] == "E"] >= 0).all() and (w[ei[src] == "I"] <= 0).all()
    assert ((ei[src] == "I").any()) == (kind == "recurrent")


def test_export_run_refuses_a_graph_option(env, tmp_path, capsys):
    assert export_main(["sonata", "--run", str(Path(env[0]) / "nothing"), "--graph", str(env[2]),
                        "--out", str(tmp_path / "x")]) != 0
    assert "--run exports the run's own graph" in capsys.readouterr().err
