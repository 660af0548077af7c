"""ResNet backbone: shapes, options, and equality with torchvision's ResNet on the same weights."""
from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from omnireid.config import get_cfg
from omnireid.modeling.backbones import BACKBONE_REGISTRY, build_backbone
from omnireid.modeling.backbones.pretrained import load_pretrained_weights
from omnireid.modeling.layers import IBN, NonLocal, SELayer


def _cfg(depth: str = "18x", **backbone):
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.DEPTH = depth
    for key, value in backbone.items():
        cfg.MODEL.BACKBONE[key.upper()] = value
    return cfg


def _randomise_bn_statistics(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial running statistics and affine parameters (eval mode uses them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("depth,channels", [("18x", 512), ("34x", 512), ("50x", 2048)])
@pytest.mark.parametrize("last_stride,size", [(1, (4, 2)), (2, (2, 1))])
def test_resnet_shapes_and_backward(depth, channels, last_stride, size):
    model = build_backbone(_cfg(depth, last_stride=last_stride))
    assert model.out_channels == channels
    x = torch.randn(2, 3, 64, 32)
    out = model(x)
    assert out.shape == (2, channels, *size)
    out.mean().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("depth", ["101x", "152x"])
def test_deep_resnets_shapes(depth):
    model = build_backbone(_cfg(depth, with_ibn=True, with_nl=True))
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 2048, 4, 2)


@pytest.mark.parametrize("depth,blocks", [("101x", (3, 4, 23, 3)), ("152x", (3, 8, 36, 3))])
def test_deep_resnet_structure(depth, blocks):
    model = build_backbone(_cfg(depth))
    assert tuple(len(stage) for stage in model.stages()) == blocks
    assert model.out_channels == 2048


@pytest.mark.parametrize("depth", ["18x", "50x"])
def test_ibn_se_nl_variants(depth):
    model = build_backbone(_cfg(depth, with_ibn=True, with_se=True, with_nl=True))
    for index, stage in enumerate(model.stages(), start=1):
        for block in stage:
            # IBN-a: first norm of every block in stages 1-3, never in stage 4
            assert isinstance(block.bn1, IBN) == (index < 4)
            assert isinstance(block.se, SELayer)
    assert not isinstance(model.bn1, IBN)
    out = model(torch.randn(2, 3, 64, 32))
    assert out.shape[:2] == (2, model.out_channels)
    out.mean().backward()


def test_non_local_positions_follow_fastreid_for_resnet50():
    model = build_backbone(_cfg("50x", with_nl=True))
    assert [len(getattr(model, f"NL_{i}")) for i in range(1, 5)] == [0, 2, 3, 0]
    assert model.NL_2_idx == (2, 3) and model.NL_3_idx == (3, 4, 5)  # after the last blocks of the stage
    assert all(isinstance(m, NonLocal) for m in model.NL_3)


def test_non_local_blocks_are_identity_at_init_so_pretrained_outputs_are_unchanged():
    with_nl = build_backbone(_cfg("18x", with_nl=True, last_stride=2))
    reference = build_backbone(_cfg("18x", last_stride=2))
    _randomise_bn_statistics(reference)
    result = with_nl.load_state_dict(reference.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("NL_") for k in result.missing_keys)
    reference.eval()
    with_nl.eval()
    x = torch.randn(2, 3, 64, 32)
    torch.testing.assert_close(with_nl(x), reference(x))


@pytest.mark.parametrize("depth,tv_builder", [("50x", torchvision.models.resnet50), ("18x", torchvision.models.resnet18)])
def test_torchvision_weights_load_and_give_identical_features(tmp_path, depth, tv_builder, caplog):
    torch.manual_seed(0)
    tv = tv_builder()
    _randomise_bn_statistics(tv)
    path = tmp_path / "weights.pth"
    torch.save(tv.state_dict(), path)

    plain = build_backbone(_cfg(depth, last_stride=2))
    report = load_pretrained_weights(plain, str(path), ignore_prefixes=("fc.",))
    assert report.complete and report.ignored == ("fc.bias", "fc.weight")

    with caplog.at_level(logging.INFO):
        model = build_backbone(_cfg(depth, last_stride=2, pretrain=True, pretrain_path=str(path)))
    assert "Missing keys" not in caplog.text and "Unexpected keys" not in caplog.text
    trunk = nn.Sequential(*list(tv.children())[:-2]).eval()  # torchvision up to layer4
    model.eval()
    x = torch.randn(2, 3, 96, 64)
    torch.testing.assert_close(model(x), trunk(x), rtol=1e-5, atol=1e-5)


def test_pretrained_ibn_reports_missing_and_unexpected_keys(tmp_path, caplog):
    tv = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tv.state_dict().items()}}, path)  # wrapped DDP checkpoint
    model = build_backbone(_cfg("18x", with_ibn=True))
    with caplog.at_level(logging.WARNING):
        report = load_pretrained_weights(model, str(path), ignore_prefixes=("fc.",))
    assert "layer1.0.bn1.IN.weight" in report.missing and "layer1.0.bn1.BN.weight" in report.missing
    assert "layer1.0.bn1.weight" in report.unexpected
    assert "layer4.0.bn1.weight" in report.loaded  # stage 4 has no IBN: loaded normally
    assert "Missing keys" in caplog.text and "Unexpected keys" in caplog.text


def test_missing_pretrained_file_is_a_clear_error(tmp_path):
    cfg = _cfg("18x", pretrain=True, pretrain_path=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="PRETRAIN_PATH"):
        build_backbone(cfg)


def test_pre_relu_stage_output_is_reachable_with_a_hook():
    model = build_backbone(_cfg("18x"))
    captured = []
    model.layer4[-1].out_relu.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    out = model(torch.randn(2, 3, 64, 32))
    assert captured[0].min() < 0 and torch.equal(torch.relu(captured[0]), out)


@pytest.mark.parametrize("norm", ["GN", "FrozenBN", "syncBN"])
def test_resnet_norm_choices(norm):
    model = build_backbone(_cfg("18x", norm=norm))
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 512, 4, 2)


def test_bad_resnet_options_are_clear_errors():
    with pytest.raises(ValueError, match="DEPTH"):
        build_backbone(_cfg("42x"))
    with pytest.raises(ValueError, match="LAST_STRIDE"):
        build_backbone(_cfg("18x", last_stride=3))
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbon"
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME.*build_resnet_backbone"):
        build_backbone(cfg)


def test_resnet_alias():
    assert BACKBONE_REGISTRY.get("resnet") is BACKBONE_REGISTRY.get("build_resnet_backbone")


def test_backbone_loads_from_a_whole_model_checkpoint(tmp_path):
    """A reID checkpoint {"model": {"backbone.*", "heads.*"}} initialises a backbone exactly."""
    from omnireid.modeling import build_model

    cfg = _cfg("18x")
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    source = build_model(cfg)
    _randomise_bn_statistics(source)
    path = tmp_path / "model_final.pth"
    torch.save({"model": source.state_dict(), "iteration": 10}, path)
    target = build_backbone(_cfg("18x"))
    report = load_pretrained_weights(target, str(path))
    assert report.complete
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)
