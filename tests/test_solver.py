"""Optimizer parameter groups and the LR schedule against hand-computed values."""
import math

import pytest
import torch
from torch import nn

from omnireid.config import ConfigError, get_cfg
from omnireid.solver import build_lr_scheduler, build_optimizer, lr_factor


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.heads = nn.Linear(4, 2)


def groups_by_name(opt):
    return {name: g for g in opt.param_groups for name in g["names"]}


def test_param_groups_apply_fastreid_factors():
    cfg = get_cfg().merge_from_list([
        "SOLVER.OPT", "SGD", "SOLVER.BASE_LR", "0.1", "SOLVER.HEADS_LR_FACTOR", "10.0",
        "SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.WEIGHT_DECAY", "1e-4", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
        "SOLVER.WEIGHT_DECAY_BIAS", "3e-4"])
    opt = build_optimizer(cfg, Tiny())
    g = groups_by_name(opt)
    assert g["backbone.0.weight"]["lr"] == pytest.approx(0.1) and g["backbone.0.weight"]["weight_decay"] == 1e-4
    assert g["backbone.0.bias"]["lr"] == pytest.approx(0.2) and g["backbone.0.bias"]["weight_decay"] == 3e-4
    assert g["backbone.1.weight"]["weight_decay"] == 0.0  # norm layer
    assert g["heads.weight"]["lr"] == pytest.approx(1.0)
    assert g["heads.bias"]["lr"] == pytest.approx(2.0)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    # Parameters with equal options share a group: (0.1, 1e-4), (0.2, 3e-4), (0.1, 0.0), (1.0, 1e-4), (2.0, 3e-4).
    assert len(opt.param_groups) == 5 and g["backbone.1.bias"] is g["backbone.0.bias"]
    assert all(group["initial_lr"] == group["lr"] for group in opt.param_groups)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_fast_implementations_update_like_the_for_loop(name):
    """fused / foreach kernels (chosen by 'auto') give the reference for-loop's parameters."""
    cfg = get_cfg().merge_from_list(["SOLVER.OPT", name, "SOLVER.BASE_LR", "0.05", "SOLVER.HEADS_LR_FACTOR", "3.0",
                                     "SOLVER.WEIGHT_DECAY_NORM", "0.0"])
    torch.manual_seed(0)
    fast, slow = Tiny(), Tiny()
    for model in (fast, slow):  # a conv bias before BN has zero gradient: Adam would step on rounding noise
        model.backbone[0].bias = None
    slow.load_state_dict(fast.state_dict())
    opt_fast = build_optimizer(cfg, fast)
    opt_slow = build_optimizer(cfg.clone().merge_from_list(["SOLVER.OPT_IMPL", "for-loop"]), slow)
    assert opt_slow.defaults["foreach"] is False
    assert opt_fast.defaults.get("fused") or opt_fast.defaults.get("foreach")
    x = torch.randn(4, 3, 6, 6)
    for _ in range(3):
        for model, opt in ((fast, opt_fast), (slow, opt_slow)):
            opt.zero_grad()
            model.heads(model.backbone(x).mean((2, 3))).square().sum().backward()
            opt.step()
    for a, b in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)  # steps are ~0.05


def test_explicit_implementation_that_the_class_lacks_is_a_config_error():
    cfg = get_cfg().merge_from_list(["SOLVER.OPT", "RMSprop", "SOLVER.OPT_IMPL", "fused"])
    with pytest.raises(ConfigError, match="OPT_IMPL 'fused'.*RMSprop"):
        build_optimizer(cfg, Tiny())
    cfg = get_cfg().merge_from_list(["SOLVER.OPT_IMPL", "fastest"])
    with pytest.raises(ConfigError, match="fastest"):
        build_optimizer(cfg, Tiny())


def test_frozen_parameters_are_left_out_and_unknown_optimizer_is_an_error():
    model = Tiny()
    model.heads.requires_grad_(False)
    opt = build_optimizer(get_cfg(), model)
    assert not any(name.startswith("heads") for name in groups_by_name(opt))
    cfg = get_cfg().merge_from_list(["SOLVER.OPT", "Adamm"])
    with pytest.raises(ConfigError, match="Adamm"):
        build_optimizer(cfg, model)


def test_linear_warmup_then_multistep():
    cfg = get_cfg().merge_from_list(["SOLVER.WARMUP_ITERS", "10", "SOLVER.WARMUP_FACTOR", "0.1",
                                     "SOLVER.STEPS", "[2, 4]", "SOLVER.GAMMA", "0.1"])
    ipe = 5  # iterations per epoch
    assert lr_factor(cfg, 0, ipe) == pytest.approx(0.1)
    assert lr_factor(cfg, 5, ipe) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(cfg, 9, ipe) == pytest.approx(0.1 + 0.9 * 0.9)
    assert lr_factor(cfg, 10, ipe) == pytest.approx(0.1)  # epoch 2 reached the first step
    assert lr_factor(cfg, 19, ipe) == pytest.approx(0.1)  # epoch 3: still between the steps
    assert lr_factor(cfg, 20, ipe) == pytest.approx(0.01)  # epoch 4: second step


def test_exp_and_constant_warmup():
    cfg = get_cfg().merge_from_list(["SOLVER.WARMUP_ITERS", "4", "SOLVER.WARMUP_FACTOR", "0.01",
                                     "SOLVER.WARMUP_METHOD", "exp", "SOLVER.STEPS", "[100]"])
    assert lr_factor(cfg, 2, 10) == pytest.approx(0.01 ** 0.5)
    cfg.SOLVER.WARMUP_METHOD = "constant"
    assert lr_factor(cfg, 3, 10) == pytest.approx(0.01) and lr_factor(cfg, 4, 10) == pytest.approx(1.0)


def test_cosine_with_delay():
    cfg = get_cfg().merge_from_list(["SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.MAX_EPOCH", "60",
                                     "SOLVER.DELAY_EPOCHS", "30", "SOLVER.BASE_LR", "0.1",
                                     "SOLVER.ETA_MIN_LR", "0.001"])
    assert lr_factor(cfg, 29, 1) == 1.0
    assert lr_factor(cfg, 45, 1) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(cfg, 60, 1) == pytest.approx(0.01)


def test_scheduler_state_round_trip_gives_same_lr():
    cfg = get_cfg().merge_from_list(["SOLVER.WARMUP_ITERS", "5", "SOLVER.STEPS", "[1]"])
    opt = build_optimizer(cfg, Tiny())
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch=3)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer(cfg, Tiny())
    sched2 = build_lr_scheduler(cfg, opt2, iters_per_epoch=3)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in opt2.param_groups])


def test_unknown_schedule_names_fail_early():
    cfg = get_cfg().merge_from_list(["SOLVER.SCHED", "Cosine"])
    with pytest.raises(KeyError, match="CosineAnnealingLR"):
        build_lr_scheduler(cfg, build_optimizer(cfg, Tiny()), 1)
