"""graphnet.plan_column: the masks a column gets before any weight exists (and scripts/mask_stats.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from graphnet import ColumnSpec, compile_column, plan_column
from tests.helpers import small_graph


def compiled_masks(column) -> dict[str, torch.Tensor]:
    """``"<src>-><dst>"`` -> (n_dst, n_src) mask of every masked projection of a compiled column."""
    masks = {}
    for name, layer in column.layers.items():
        for src, mod in layer.projections.items():
            if hasattr(mod, "mask"):                   # the input projection has none
                masks[f"{src}->{name}"] = mod.mask
        if layer.intra is not None:
            masks[f"{name}->{name}"] = layer.intra.mask
    return masks


def test_plan_is_what_compile_builds_and_null_models_apply():
    g = small_graph()
    spec = ColumnSpec.bionic(backend="dense", seed=3)
    plans, projs = plan_column(g, spec)
    col = compile_column(g, spec, in_features=8)
    assert [p.size for p in plans] == [col.layers[p.name].size for p in plans]
    masks = compiled_masks(col)
    assert set(masks) == {pp.key for pp in projs}
    for pp in projs:                                    # mask[post, pre] == the planned edges
        m = torch.zeros(pp.n_dst, pp.n_src, dtype=torch.bool)
        m[torch.as_tensor(pp.post), torch.as_tensor(pp.pre)] = True
        assert torch.equal(masks[pp.key] != 0, m), pp.key
    shuf = {pp.key: (len(pp.pre), np.bincount(pp.post, minlength=pp.n_dst).tolist())
            for pp in plan_column(g, ColumnSpec.bionic(mask="degree_shuffle", seed=3))[1]}
    orig = {pp.key: (len(pp.pre), np.bincount(pp.post, minlength=pp.n_dst).tolist()) for pp in projs}
    assert shuf == orig                                   # same edges and fan-ins per block...
    same_partners = [set(zip(a.pre, a.post)) == set(zip(b.pre, b.post)) for a, b in
                     zip(projs, plan_column(g, ColumnSpec.bionic(mask="degree_shuffle", seed=3))[1])]
    assert not all(same_partners)                         # ...other partners
    rnd = plan_column(g, ColumnSpec.bionic(mask="random", seed=3))[1]
    assert {pp.key for pp in rnd} == set(orig) and rnd[0].pre.tolist() != projs[0].pre.tolist()


def test_mask_stats_script_tables():
    path = Path(__file__).resolve().parents[1] / "scripts" / "mask_stats.py"
    spec = importlib.util.spec_from_file_location("mask_stats", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    st = mod.mask_stats(small_graph(), seed=2)
    assert set(st) == {"connectome", "random", "degree_shuffle", "label_shuffle"}
    assert st["degree_shuffle"]["edges"] == st["connectome"]["edges"]
    assert st["degree_shuffle"]["no_input"] == st["connectome"]["no_input"]
    for mask in ("connectome", "random"):     # units without input, counted on the compiled masks
        col = compile_column(small_graph(), ColumnSpec.bionic(backend="dense", mask=mask, seed=2), in_features=8)
        rows_without_input = {k: int(((m != 0).sum(1) == 0).sum()) for k, m in compiled_masks(col).items()}
        assert st[mask]["no_input"] == rows_without_input, mask
    assert st["connectome"]["no_input"] != st["random"]["no_input"]
    assert set(st["connectome"]["inhibition"]) == {"A", "B", "C", "D"}
