"""Batched augmentation, the config/CLI, the LR schedules and the models' shapes and sizes."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from pipelines.augment import AugmentConfig, BatchAugment
from pipelines.config import PRESETS, Config, add_config_arguments, cli_fields, config_from_args
from pipelines.optim import LRSchedule
from graphnet.testing import synthetic_graph



# -- augmentation --------------------------------------------------------------------------------
def batch_of_one_image(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 1, 48, 48, generator=g)
    return img.expand(n, 1, 48, 48).contiguous()


def test_identical_images_get_independent_augmentations():
    x = batch_of_one_image(64)
    aug = BatchAugment(AugmentConfig())
    p = aug.sample(64, torch.Generator().manual_seed(1))
    y = aug.apply(x, p)
    flat = y.flatten(1)
    d = torch.cdist(flat, flat)
    off = d[~torch.eye(64, dtype=torch.bool)]
    assert (off > 1e-3).all()                                 # every pair differs
    assert 16 <= int(p["flip"].sum()) <= 48                   # about half flipped
    assert p["angle"].std() > 0 and p["scale"].std() > 0 and p["brightness"].std() > 0
    # the parameters of different images are (empirically) uncorrelated
    c = np.corrcoef(torch.stack([p["angle"], p["scale"], p["tx"], p["ty"], p["brightness"]]).numpy())
    assert np.abs(c[~np.eye(5, dtype=bool)]).max() < 0.45
    assert y.min() >= 0 and y.max() <= 1


def test_augmenting_a_slice_equals_slicing_the_batch():
    """What data-parallel ranks rely on: an image's result depends only on its own parameters."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(32, 1, 48, 48, generator=g)
    aug = BatchAugment(AugmentConfig(erase_p=0.5))
    p = aug.sample(32, torch.Generator().manual_seed(4))
    full = aug.apply(x, p)
    for sl in (slice(0, 16), slice(16, 32), slice(5, 6)):
        assert torch.allclose(aug.apply(x[sl], BatchAugment.slice(p, sl)), full[sl], atol=1e-6)


def test_augmentation_is_reproducible_and_seed_dependent():
    x = batch_of_one_image(8)
    aug = BatchAugment()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_flip_only_is_an_exact_mirror_and_off_is_identity():
    x = torch.rand(16, 1, 48, 48, generator=torch.Generator().manual_seed(7))
    off = AugmentConfig(flip=0, rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0, erase_p=0)
    assert torch.equal(BatchAugment(off)(x, torch.Generator().manual_seed(0)), x)
    flip = BatchAugment(replace(off, flip=0.5))
    p = flip.sample(16, torch.Generator().manual_seed(8))
    y = flip.apply(x, p)
    want = torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
    assert torch.allclose(y, want, atol=1e-5)
    assert 0 < int(p["flip"].sum()) < 16


def test_erasing_fills_one_rectangle_per_selected_image():
    x = torch.zeros(64, 1, 48, 48)
    cfg = AugmentConfig(flip=0, rotate_deg=0, scale=0, translate=0, brightness=0, contrast=0, erase_p=0.5)
    aug = BatchAugment(cfg)
    p = aug.sample(64, torch.Generator().manual_seed(9))
    y = aug.apply(x, p)
    changed = (y != 0).flatten(1).any(1)
    fill = p["erase_pos"][2]
    assert torch.equal(changed, p["erase"] & (fill > 0))
    for i in torch.nonzero(changed).flatten().tolist()[:5]:
        rows = (y[i, 0] != 0).any(1).nonzero().flatten()
        cols = (y[i, 0] != 0).any(0).nonzero().flatten()
        box = y[i, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert torch.all(box == fill[i])                      # a filled rectangle
        frac = box.numel() / 48 ** 2
        assert cfg.erase_area[0] * 0.5 <= frac <= cfg.erase_area[1] * 1.6


# -- config / CLI --------------------------------------------------------------------------------
def test_every_field_is_a_cli_option_and_types_parse():
    ap = argparse.ArgumentParser()
    add_config_arguments(ap)
    ns = ap.parse_args(["--preset", "paper", "--lr", "0.01", "--dale", "false", "--epochs", "3",
                        "--lateral_inhibition", "0", "--mask", "random", "--augment", "yes"])
    cfg, explicit = config_from_args(ns)
    opts = {a.dest for a in ap._actions}
    assert {f.name for f in fields(Config)} - {"column", "aug"} <= opts   # plain fields
    assert set(cli_fields()) <= opts and {"hebbian_rate", "column_backend", "aug_rotate"} <= opts
    assert cfg.lr == 0.01 and cfg.dale is False and cfg.epochs == 3 and cfg.mask == "random"
    assert cfg.lateral_inhibition is False and cfg.augment is True
    # every preset field not given on the command line comes from the preset, and the preset
    # changes the defaults (so a preset that was not applied fails here)
    given = {"lr", "dale", "epochs", "lateral_inhibition", "mask", "augment"}
    assert {k: getattr(cfg, k) for k in set(PRESETS["paper"]) - given} == \
        {k: v for k, v in PRESETS["paper"].items() if k not in given}
    assert {k for k, v in PRESETS["paper"].items() if getattr(Config(), k) != v} - given
    ns400 = ap.parse_args(["--preset", "paper400", "--seed", "2"])
    cfg400, _ = config_from_args(ns400)
    assert {k: getattr(cfg400, k) for k in PRESETS["paper400"]} == PRESETS["paper400"]
    assert {k for k, v in PRESETS["paper400"].items() if v != PRESETS["paper"].get(k)} >= {"batch_size", "epochs"}
    assert cfg400.out == "runs/paper400-s2"
    assert cfg.out == "runs/paper-s1"
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(SystemExit):
        ap.parse_args(["--dale", "maybe"])
    with pytest.raises(ValueError, match="PrivateTest is only ever evaluated"):
        config_from_args(ap.parse_args(["--val_usage", "PrivateTest"]))
    with pytest.raises(ValueError, match="lr_schedule"):
        config_from_args(ap.parse_args(["--lr_schedule", "exp"]))


def test_lr_schedules():
    cfg = Config(lr_schedule="cosine", min_lr_ratio=0.01)
    f = [LRSchedule(cfg, 100, 10).factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))       # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.01, abs=2e-3)
    oc = [LRSchedule(replace(cfg, lr_schedule="onecycle"), 100, 30).factor(s) for s in range(100)]
    assert oc[0] < 0.1 and max(oc) == pytest.approx(1.0, abs=1e-3) and oc[-1] < 0.02
    const = [LRSchedule(replace(cfg, lr_schedule="plateau"), 100, 0).factor(s) for s in range(100)]
    assert set(const) == {1.0}


# -- models ----------------------------------------------------------------------------------------
PAPER_WIDTHS = {("4P", "L4"): 266, ("23P", "L2/3"): 349, ("5P-IT", "L5"): 136, ("5P-ET", "L5"): 39,
                ("5P-NP", "L5"): 10, ("6P-IT", "L6"): 237, ("6P-CT", "L6"): 146,
                ("BC", "L4"): 13, ("BC", "L2/3"): 17, ("MC", "L5"): 8}


def test_paper_and_cnn_presets_parameter_counts():
    from pipelines.models import PAPER_CNN_PARAMS, build_model, count_parameters

    g = synthetic_graph(PAPER_WIDTHS, p=0.02)
    paper = replace(Config(), **PRESETS["paper"])
    m = build_model(paper, g)
    c = count_parameters(m)
    # conv 1->8 (5x5) 208 + conv 8->16 3,216 + CBAM 247; column: input 3,600x266 = 957,600 + one
    # weight per connection of A->B, B->C, C->D and the 4 within-layer masks (not the dense
    # matrices that store them) + bias, LayerNorm gain and shift per unit (3 x 1,183); head 383x7+7
    edges = sum(mod.n_edges for mod in m.column.modules() if type(mod).__name__ == "MaskedLinear")
    assert edges > 1000
    column = 3600 * 266 + edges + 3 * (266 + 349 + 185 + 383)
    assert c == {"front": 3_671, "dropout": 0, "column": column, "head": 2_688,
                 "total": 3_671 + column + 2_688}
    assert m.column.out_features == 383 and m.front.out_features == 16 * 15 * 15
    assert m(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    for name in ("cnn", "cnn400"):
        cnn = build_model(replace(Config(), **PRESETS[name]))
        assert abs(count_parameters(cnn)["total"] - PAPER_CNN_PARAMS) < 0.002 * PAPER_CNN_PARAMS
    # the presets of a pair differ in the model only, not in the training recipe
    from pipelines.config import CPU_RECIPE, PAPER_RECIPE

    for bionic, plain, recipe in (("paper", "cnn", CPU_RECIPE), ("paper400", "cnn400", PAPER_RECIPE)):
        for k in set(recipe) - {"noise_std"}:      # synaptic noise: the column's, so off in the CNN
            assert PRESETS[bionic][k] == PRESETS[plain][k] == recipe[k], (bionic, plain, k)
    assert not any("Lateral" in type(mod).__name__ or "CBAM" in type(mod).__name__ for mod in cnn.modules())


def test_switches_change_the_model():
    from pipelines.frontend import CBAM
    from pipelines.models import build_model

    g = synthetic_graph({("4P", "L4"): 12, ("23P", "L2/3"): 10, ("5P-IT", "L5"): 8, ("6P-IT", "L6"): 9,
                      ("BC", "L4"): 3}, p=0.2)
    base = replace(Config(), conv1_channels=4, conv2_channels=4, feat_size=6)
    from pipelines.frontend import FastLateralInhibition2d, LateralInhibition2d

    m = build_model(base, g)
    names = {type(x).__name__ for x in m.modules()}
    assert {"CBAM", "LayerNorm", "GradedInhibition"} <= names
    assert any(isinstance(x, FastLateralInhibition2d) for x in m.modules())
    off = build_model(replace(base, lateral_inhibition=False, attention=False, layer_norm=False,
                              graded_inhibition=False), g)
    names = {type(x).__name__ for x in off.modules()}
    assert not names & {"CBAM", "LayerNorm", "GradedInhibition"}
    assert not any(isinstance(x, LateralInhibition2d) for x in off.modules())
    raw = build_model(replace(base, conv_layers=False, feat_size=48), g)
    assert not any(isinstance(x, torch.nn.Conv2d) for x in raw.modules())
    assert raw.front.out_features == 2304 and raw(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    wide = build_model(replace(base, front="wide", wide_channels="8,8,8", feat_size=6), g)
    assert wide.front.out_features == 8 * 36 and wide(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    assert any(isinstance(x, CBAM) for x in wide.modules())


def test_matmul_adaptive_pool_and_cbam_layouts_agree():
    from pipelines.frontend import CBAM, AdaptiveAvgPool2dMM

    x = torch.randn(3, 4, 24, 24)
    for out in (15, 7, 10):
        assert torch.allclose(AdaptiveAvgPool2dMM(24, out)(x), torch.nn.functional.adaptive_avg_pool2d(x, out),
                              atol=1e-6)
    m = CBAM(4)
    xr = torch.relu(x).requires_grad_()
    xc = xr.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    a, b = m(xr), m(xc)
    assert torch.allclose(a, b, atol=1e-6)
    ga, = torch.autograd.grad(a.sum(), xr)
    gb, = torch.autograd.grad(b.sum(), xc)
    assert torch.allclose(ga, gb, atol=1e-5)
