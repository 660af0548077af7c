"""FastReID checkpoints give the same features in omnireid: FastReID 1.4.0 (PyPI) is the reference.

Each case writes a FastReID config, builds FastReID's model from its own ``get_cfg`` with random
weights and data-calibrated, then perturbed BN statistics, saves ``{"model": state_dict}``, converts
config + checkpoint with ``convert_fastreid`` and compares eval features on the same images.
"""
from __future__ import annotations


import pytest
import torch
from fastreid_reference import import_fastreid


_config, _modeling, _events = import_fastreid("fastreid.config", "fastreid.modeling", "fastreid.utils.events")
fastreid_get_cfg, fastreid_build_model, EventStorage = _config.get_cfg, _modeling.build_model, _events.EventStorage

from omnireid.compat import convert_fastreid  # noqa: E402
from omnireid.config import get_cfg  # noqa: E402
from omnireid.modeling import build_model  # noqa: E402
from omnireid.modeling.weights import load_weights  # noqa: E402

TOLERANCE = 1e-4

CONFIG_TEMPLATE = """\
MODEL:
  META_ARCHITECTURE: {arch}
  BACKBONE:
    NAME: {backbone}
    DEPTH: {depth}
    FEAT_DIM: {feat_dim}
    WITH_IBN: {ibn}
    WITH_SE: {se}
    WITH_NL: {nl}
    PRETRAIN: False
  HEADS:
    NUM_CLASSES: 7
    WITH_BNNECK: True
    NECK_FEAT: after
    POOL_LAYER: {pool}
    CLS_LAYER: {cls}
    EMBEDDING_DIM: {embedding}
    SCALE: 64
    MARGIN: 0.35
  LOSSES:
    NAME: ("CrossEntropyLoss",)
"""


def fastreid_yaml(arch="Baseline", backbone="build_resnet_backbone", depth="50x", feat_dim=2048, ibn=False,
                  se=False, nl=False, pool="GlobalAvgPool", cls="Linear", embedding=0) -> str:
    return CONFIG_TEMPLATE.format(**locals())


CASES = {
    "bot_R50": (fastreid_yaml(), 64),
    "sbs_R50-ibn_nl_gemP_circle": (fastreid_yaml(ibn=True, nl=True, pool="GeneralizedMeanPoolingP",
                                                 cls="CircleSoftmax"), 64),
    "R50-se_embedding_arcsoftmax": (fastreid_yaml(se=True, embedding=256, cls="ArcSoftmax"), 64),
}
# In tests/test_compat_fastreid_zoo.py (kept apart so each file stays fast).
ZOO_CASES = {
    "S50": (fastreid_yaml(backbone="build_resnest_backbone"), 64),
    "X50": (fastreid_yaml(backbone="build_resnext_backbone"), 64),
    "osnet_x1_0": (fastreid_yaml(backbone="build_osnet_backbone", depth="x1_0", feat_dim=512), 64),
    "osnet_ibn_x1_0": (fastreid_yaml(backbone="build_osnet_backbone", depth="x1_0", feat_dim=512, ibn=True), 64),
    # MGN cuts the stride-16 map in 3 stripes: 96 px high is the smallest input giving 3 non-empty ones.
    "mgn_R50-ibn": (fastreid_yaml(arch="MGN", ibn=True, pool="GeneralizedMeanPoolingP", cls="CircleSoftmax"), 96),
}


def randomise_fastreid_model(model: torch.nn.Module, height: int, seed: int = 0) -> None:
    """Random affine norms, BN statistics from a forward pass over random images (then perturbed by
    +-10%), GeM p != 3, small non-local output norms: every parameter and buffer matters."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d))]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("pool_layer.p"):
                param.fill_(3.7)
        for norm in norms:
            if norm.weight is not None:
                norm.weight.copy_(torch.rand(norm.weight.shape, generator=gen) * 0.5 + 0.75)
                norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen) * 0.1)
        for name, module in model.named_modules():  # non-local W = (conv, norm): keep the residual moderate
            if name.endswith(".W") and isinstance(module, torch.nn.Sequential):
                module[1].weight.mul_(0.1)
        momenta = [(norm, norm.momentum) for norm in norms]
        for norm, _ in momenta:
            norm.momentum = 1.0
        model.train()
        images = torch.randint(0, 256, (8, 3, height, 32), generator=gen).float()
        with EventStorage(0):
            model({"images": images, "targets": torch.arange(8) % 7})
        for norm, momentum in momenta:
            norm.momentum = momentum
        for norm in norms:
            if getattr(norm, "running_mean", None) is not None:
                norm.running_mean.mul_(torch.rand(norm.running_mean.shape, generator=gen) * 0.2 + 0.9)
                norm.running_var.mul_(torch.rand(norm.running_var.shape, generator=gen) * 0.2 + 0.9)
    model.eval()


def build_fastreid_reference(tmp_path, yaml_text: str, height: int):
    config_path = tmp_path / "fastreid.yml"
    config_path.write_text(yaml_text)
    cfg = fastreid_get_cfg()
    cfg.merge_from_file(str(config_path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    torch.manual_seed(0)
    model = fastreid_build_model(cfg)
    randomise_fastreid_model(model, height)
    weights_path = tmp_path / "fastreid.pth"
    torch.save({"model": model.state_dict(), "iteration": 123}, weights_path)
    return model, str(config_path), str(weights_path)


def features(fastreid_model, ours, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randint(0, 256, (2, 3, height, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    with torch.no_grad():
        expected = fastreid_model(images.float())  # FastReID normalises its input in place: give it a copy
        actual = ours(images)["features"]
    return expected, actual


def check_same_features(yaml_text: str, height: int, tmp_path) -> None:
    """Convert a randomised FastReID model; omnireid's features and logits must match FastReID's."""
    reference, config_path, weights_path = build_fastreid_reference(tmp_path, yaml_text, height)
    converted = convert_fastreid(config_path, weights_path, str(tmp_path / "converted"), opts=["MODEL.DEVICE", "cpu"])
    cfg = get_cfg()
    cfg.merge_from_file(converted.config_path)
    model = build_model(cfg)
    load_weights(model, cfg.MODEL.WEIGHTS, strict=True)
    model.eval()
    expected, actual = features(reference, model, height)
    assert expected.shape == actual.shape
    assert 0.1 < expected.abs().max() < 1e3  # a meaningful scale for the absolute tolerance
    assert (expected - actual).abs().max().item() <= TOLERANCE
    # the classifier came along too: margin-free logits as FastReID computes them
    if cfg.MODEL.META_ARCHITECTURE == "Baseline":
        neck = actual
        weight = reference.heads.weight
        reference_logits = (torch.nn.functional.linear(neck, weight) if cfg.MODEL.HEADS.CLS_LAYER == "Linear" else
                            torch.nn.functional.linear(torch.nn.functional.normalize(neck),
                                                       torch.nn.functional.normalize(weight)))
        ours_logits = model.heads.classifier.base_logits(neck)
        assert torch.allclose(ours_logits, reference_logits, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_converted_fastreid_model_gives_the_same_features(case, tmp_path):
    check_same_features(*CASES[case], tmp_path)
