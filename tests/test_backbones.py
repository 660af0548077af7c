"""Every registered backbone: builds from a config, trains, round-trips its state dict, exports to ONNX.

Heavy checks run on the smallest variant of each family (tiny widths where the class allows);
the big variants are checked cheaply against independent references (torchvision / timm / FastReID
parameter counts and state-dict layouts, built on the meta device; published RegNet widths).
"""
from __future__ import annotations

import io
from typing import Callable

import pytest
import torch
from fastreid_reference import import_fastreid
from torch import nn

from omnireid.config.config import ConfigError
from omnireid.config.defaults import get_cfg
from omnireid.modeling.backbones import BACKBONE_REGISTRY
from omnireid.modeling.backbones.efficientnet import EFFICIENTNET_SCALING
from omnireid.modeling.backbones.mobilenet import _V3_TABLES
from omnireid.modeling.backbones.osnet import OSNET_CHANNELS
from omnireid.modeling.backbones.regnet import REGNET_PARAMS, regnet_stages
from omnireid.modeling.backbones.repvgg import REPVGG_SPECS, RepVGG, RepVGGSpec
from omnireid.modeling.backbones.resnest import RESNEST_SPECS, ResNeSt
from omnireid.modeling.backbones.resnext import RESNEXT_SPECS, ResNeXt
from omnireid.modeling.backbones.shufflenet import SHUFFLENET_CHANNELS
from omnireid.modeling.backbones.vision_transformer import VIT_SPECS, VisionTransformer
from omnireid.tasks.face.backbones import IRESNET_LAYERS, MOBILEFACENET_SPECS, IResNet, MobileFaceNet

SIZES = ((64, 32), (96, 48))


def cfg_with(name: str, **backbone) -> "object":
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    for key, value in backbone.pop("_root", {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    for key, value in backbone.items():
        cfg.MODEL.BACKBONE[key] = value
    return cfg


def from_cfg(name: str, **backbone) -> Callable[[], nn.Module]:
    return lambda: BACKBONE_REGISTRY.get(name)(cfg_with(name, **backbone))


# (registered name, case id, factory): the smallest member of each family, tiny where possible.
CASES: list[tuple[str, str, Callable[[], nn.Module]]] = [
    ("build_resnet_backbone", "resnet18", from_cfg("build_resnet_backbone", DEPTH="18x")),
    ("build_resnest_backbone", "resnest-tiny-dilated", lambda: ResNeSt((1, 1, 1, 2), stem_width=8, base_width=8)),
    ("build_resnext_backbone", "resnext-tiny-ibn-nl",
     lambda: ResNeXt((1, 1, 2, 1), with_ibn=True, non_local_per_stage=(0, 1, 1, 0), cardinality=4, base_width=2)),
    ("build_osnet_backbone", "osnet_ibn_x0_25", from_cfg("build_osnet_backbone", DEPTH="x0_25", WITH_IBN=True)),
    ("build_repvgg_backbone", "repvgg-tiny-g2",
     lambda: RepVGG(RepVGGSpec((1, 2, 2, 1), (0.25, 0.25, 0.25, 0.25), groups=2))),
    ("build_repvgg_backbone", "repvgg-A0-deploy", from_cfg("build_repvgg_backbone", DEPTH="A0", DEPLOY=True)),
    ("build_vit_backbone", "vit-tiny-overlap-sie",
     lambda: VisionTransformer((64, 32), stride_size=(12, 12), embed_dim=32, depth=2, num_heads=2,
                               drop_path_rate=0.1, drop_rate=0.1, num_cameras=3, sie_coe=3.0)),
    ("build_mobilenetv2_backbone", "mobilenetv2-0.25", from_cfg("build_mobilenetv2_backbone", WIDTH_MULT=0.25)),
    ("build_mobilenetv3_backbone", "mobilenetv3-small-0.5",
     from_cfg("build_mobilenetv3_backbone", DEPTH="small", WIDTH_MULT=0.5)),
    ("build_shufflenetv2_backbone", "shufflenetv2-0.5x", from_cfg("build_shufflenetv2_backbone", DEPTH="0.5x")),
    ("build_effnet_backbone", "efficientnet-b0", from_cfg("build_effnet_backbone", DEPTH="b0")),
    ("build_regnet_backbone", "regnetx-200mf", from_cfg("build_regnet_backbone", DEPTH="200x")),
    ("build_regnet_backbone", "regnety-200mf", from_cfg("build_regnet_backbone", DEPTH="200y", LAST_STRIDE=2)),
    ("build_timm_backbone", "timm-mobilenetv3_small_050",
     from_cfg("timm", VARIANT="mobilenetv3_small_050")),
    ("build_iresnet_backbone", "iresnet-tiny-gn",
     lambda: IResNet((1, 1, 1, 1), input_size=(32, 32), num_features=16, dropout=0.2, width=0.25, norm="GN")),
    ("build_iresnet_backbone", "iresnet18-cfg",
     from_cfg("build_iresnet_backbone", DEPTH="18", FEAT_DIM=32, WIDTH_MULT=0.125,
              _root={"INPUT.SIZE_TRAIN": [48, 40], "INPUT.SIZE_TEST": [48, 40]})),
    ("build_mobilefacenet_backbone", "mobilefacenet-tiny",
     from_cfg("build_mobilefacenet_backbone", DEPTH="mbf", FEAT_DIM=16, WIDTH_MULT=0.125,
              _root={"INPUT.SIZE_TRAIN": [32, 32], "INPUT.SIZE_TEST": [32, 32]})),
    ("build_timm_backbone", "timm-vit_tiny (tokens)",
     from_cfg("timm", VARIANT="vit_tiny_patch16_224", _root={"INPUT.SIZE_TRAIN": [64, 32]})),
]


# Backbones whose embedding layer is sized from the input take only that input size.
FIXED_INPUT_SIZE = {"iresnet-tiny-gn": (32, 32), "iresnet18-cfg": (48, 40), "mobilefacenet-tiny": (32, 32)}


def test_every_registered_backbone_has_a_case():
    assert set(BACKBONE_REGISTRY.names()) <= {name for name, _, _ in CASES}


def _forward(model: nn.Module, x: torch.Tensor, camids: torch.Tensor | None = None) -> torch.Tensor:
    if getattr(model, "accepts_camids", False):
        return model(x, camids=camids)
    return model(x)


@pytest.mark.parametrize("name,case,factory", CASES, ids=[case for _, case, _ in CASES])
def test_backbone(name, case, factory, tmp_path):
    torch.manual_seed(0)
    model = factory()
    assert isinstance(model.out_channels, int)

    # training: forward + backward at two input sizes, every parameter receives a gradient
    model.train()
    sizes = (FIXED_INPUT_SIZE[case],) if case in FIXED_INPUT_SIZE else SIZES
    for height, width in sizes:
        x = torch.randn(2, 3, height, width)
        out = _forward(model, x, camids=torch.tensor([0, 2]))
        assert out.dim() == 4 and out.shape[:2] == (2, model.out_channels), out.shape
        model.zero_grad(set_to_none=True)
        out.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # state-dict round trip into a fresh instance: identical eval outputs
    model.eval()
    x = torch.randn(3, 3, *sizes[0])
    with torch.no_grad():
        expected = _forward(model, x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = factory().eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(_forward(fresh, x), expected)

    # ONNX (legacy exporter, opset 17, dynamic batch) and onnxruntime parity at another batch size
    onnxruntime = pytest.importorskip("onnxruntime")
    path = str(tmp_path / "backbone.onnx")
    torch.onnx.export(model, (torch.randn(2, 3, *sizes[0]),), path, dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["features"],
                      dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": x.numpy()})
    scale = expected.abs().max().item()
    assert got.shape == tuple(expected.shape)
    assert float(abs(torch.from_numpy(got) - expected).max()) <= 1e-4 * max(scale, 1e-3)


# ------------------------------------------------------------------------------------------------
# Behaviour of individual families
# ------------------------------------------------------------------------------------------------
def _randomise_norm_stats(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode comparisons mean something."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("variant", ["A0", "B1g4"])
def test_repvgg_deploy_form_gives_the_same_outputs(variant):
    spec = REPVGG_SPECS[variant]
    tiny = RepVGGSpec((1, 2, 2, 1), tuple(w / 4 for w in spec.width_multipliers), spec.groups)
    torch.manual_seed(0)
    model = RepVGG(tiny).eval()
    _randomise_norm_stats(model)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model(x)
        model.switch_to_deploy()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        deployed = model(x)
    assert (deployed - expected).abs().max() <= 1e-4 * expected.abs().max()
    # DEPLOY=True builds the same fused layout directly: the deployed weights load strictly
    direct = RepVGG(tiny, deploy=True).eval()
    direct.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(direct(x), deployed)


def test_repvgg_deploy_flag_from_config_has_no_branches():
    model = BACKBONE_REGISTRY.get("repvgg")(cfg_with("repvgg", DEPTH="A0", DEPLOY=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(k.split(".")[-2] == "rbr_reparam" for k in model.state_dict())


def test_vit_camera_embedding_is_wired_to_camids():
    torch.manual_seed(0)
    vit = VisionTransformer((64, 32), embed_dim=32, depth=1, num_heads=2, num_cameras=4, sie_coe=3.0).eval()
    x = torch.randn(1, 3, 64, 32).expand(4, -1, -1, -1)
    with torch.no_grad():
        per_camera = vit(x, camids=torch.arange(4))
        without = vit(x)
        again = vit(x, camids=torch.tensor([2, 2, 2, 2]))
    # same image, different cameras -> different features; same camera -> same features
    assert all((per_camera[i] - per_camera[j]).abs().max() > 1e-3 for i in range(4) for j in range(i))
    assert torch.allclose(again[0], per_camera[2], atol=1e-6)
    # the camera term is SIE_COE x the learned vector of that camera
    manual = VisionTransformer((64, 32), embed_dim=32, depth=1, num_heads=2, num_cameras=0, sie_coe=0.0).eval()
    manual.load_state_dict({k: v for k, v in vit.state_dict().items() if k != "sie_embed"})
    with torch.no_grad():
        manual.pos_embed.add_(3.0 * vit.sie_embed[1])
        assert torch.allclose(manual(x[:1]), per_camera[1:2], atol=1e-5)
    assert not torch.allclose(without, per_camera)
    with pytest.raises(ValueError, match="NUM_CAMERAS"):
        vit(x, camids=torch.tensor([0, 1, 2, 4]))


def test_vit_without_sie_has_no_camera_embedding():
    cfg = cfg_with("vit", DEPTH="small", SIE_COE=0.0, _root={"INPUT.SIZE_TRAIN": [64, 32],
                                                              "MODEL.HEADS.NUM_CAMERAS": 6})
    with torch.device("meta"):
        vit = BACKBONE_REGISTRY.get("vit")(cfg)
    assert vit.sie_embed is None and "sie_embed" not in vit.state_dict()
    cfg.MODEL.BACKBONE.SIE_COE = 3.0
    with torch.device("meta"):
        vit = BACKBONE_REGISTRY.get("vit")(cfg)
    assert tuple(vit.sie_embed.shape) == (6, 1, 768)


def test_vit_matches_timm_transformer():
    """Same weights, same tokens: our CLS output equals timm's ViT (non-overlapping, no SIE)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.models.vision_transformer.VisionTransformer(img_size=(64, 32), patch_size=16, embed_dim=48, depth=2,
                                                           num_heads=3, mlp_ratio=4.0, qkv_bias=True,
                                                           num_classes=0).eval()
    ours = VisionTransformer((64, 32), embed_dim=48, depth=2, num_heads=3).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = ref.forward_features(x)[:, 0]
        got = ours(x).flatten(1)
    assert (got - expected).abs().max() < 1e-5


def test_vit_interpolates_positions_for_other_input_sizes():
    vit = VisionTransformer((64, 32), stride_size=(16, 16), embed_dim=32, depth=1, num_heads=2).eval()
    with torch.no_grad():
        pos = vit._positions(4, 2)
        assert pos is vit.pos_embed
        bigger = vit._positions(8, 4)
    assert bigger.shape == (1, 1 + 32, 32)
    assert torch.equal(bigger[:, 0], vit.pos_embed[:, 0])


# ------------------------------------------------------------------------------------------------
# References: torchvision state dicts load and give identical features
# ------------------------------------------------------------------------------------------------
def _tv_features(model: nn.Module, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "features":
        return model.features
    if kind == "regnet":
        return lambda x: model.trunk_output(model.stem(x))
    return lambda x: model.conv5(model.stage4(model.stage3(model.stage2(model.maxpool(model.conv1(x))))))


TORCHVISION_REFERENCES = [
    ("mobilenetv2", dict(WIDTH_MULT=0.5), lambda tv: tv.mobilenet_v2(width_mult=0.5), "features"),
    ("mobilenetv3", dict(DEPTH="Large"), lambda tv: tv.mobilenet_v3_large(), "features"),
    ("mobilenetv3", dict(DEPTH="Small", WIDTH_MULT=0.75), lambda tv: tv.mobilenet_v3_small(width_mult=0.75),
     "features"),
    ("shufflenetv2", dict(DEPTH="1.0x"), lambda tv: tv.shufflenet_v2_x1_0(), "shuffle"),
    ("efficientnet", dict(DEPTH="b1", LAST_STRIDE=2), lambda tv: tv.efficientnet_b1(), "features"),
    ("regnet", dict(DEPTH="800x", LAST_STRIDE=2), lambda tv: tv.regnet_x_800mf(), "regnet"),
    ("regnet", dict(DEPTH="400y", LAST_STRIDE=2), lambda tv: tv.regnet_y_400mf(), "regnet"),
]


@pytest.mark.parametrize("name,overrides,reference,kind", TORCHVISION_REFERENCES,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o, _, _ in TORCHVISION_REFERENCES])
def test_torchvision_weights_load_and_match(name, overrides, reference, kind):
    import torchvision.models as tv

    torch.manual_seed(0)
    ref = reference(tv).eval()
    _randomise_norm_stats(ref)
    ours = BACKBONE_REGISTRY.get(name)(cfg_with(name, **overrides)).eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith(("classifier.", "fc."))}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = _tv_features(ref, kind)(x)
        got = ours(x)
    assert got.shape == expected.shape and got.shape[1] == ours.out_channels
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_last_stride_one_doubles_the_final_map():
    for name, depth in (("regnet", "200x"), ("efficientnet", "b0")):
        models = [BACKBONE_REGISTRY.get(name)(cfg_with(name, DEPTH=depth, LAST_STRIDE=s)).eval() for s in (1, 2)]
        maps = [model(torch.randn(1, 3, 64, 32)) for model in models]
        assert maps[0].shape[-2:] == (4, 2) and maps[1].shape[-2:] == (2, 1)


# ------------------------------------------------------------------------------------------------
# Structure of every variant, checked cheaply on the meta device
# ------------------------------------------------------------------------------------------------
def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_meta(name: str, **overrides) -> nn.Module:
    with torch.device("meta"):
        return BACKBONE_REGISTRY.get(name)(cfg_with(name, **overrides))


def test_regnet_widths_follow_the_parametrisation():
    """Our derivation equals torchvision's BlockParams except where torchvision's group-width rounding
    (round half up, never below 90%) differs from pycls's (round half to even): there the stage
    widths differ by exactly one group width. Published pycls stage widths are checked below."""
    from torchvision.models.regnet import BlockParams

    differing = set()
    for variant, params in REGNET_PARAMS.items():
        ours = regnet_stages(params)
        ref = BlockParams.from_init_params(params.depth, params.w0, params.wa, params.wm, params.group_width)
        assert list(ours.depths) == ref.depths and list(ours.group_widths) == ref.group_widths
        for mine, theirs, group in zip(ours.widths, ref.widths, ours.group_widths):
            assert mine == theirs or abs(mine - theirs) == group, variant
        if list(ours.widths) != ref.widths:
            differing.add(variant)
    assert differing == {"400x", "4000x", "800y", "4000y", "8000y"}
    assert regnet_stages(REGNET_PARAMS["800x"]).widths == (64, 128, 288, 672)  # pycls RegNetX-800MF
    assert regnet_stages(REGNET_PARAMS["800x"]).depths == (1, 3, 7, 5)


def test_regnet_parameter_counts_match_timm():
    timm = pytest.importorskip("timm")
    for variant in REGNET_PARAMS:
        mf, kind = variant[:-1], variant[-1]
        ours = _build_meta("regnet", DEPTH=variant)
        with torch.device("meta"):
            ref = timm.create_model(f"regnet{kind}_{int(mf) // 100:03d}", num_classes=0)
        assert _params(ours) == _params(ref), variant


def test_resnest_resnext_repvgg_vit_parameter_counts_match_timm():
    timm = pytest.importorskip("timm")
    pairs = [(("resnest", dict(DEPTH=d)), n) for d, n in
             zip(RESNEST_SPECS, ("resnest50d", "resnest101e", "resnest200e", "resnest269e"))]
    pairs += [(("resnext", dict(DEPTH="101x")), "resnext101_32x4d"),
              (("resnext", dict(DEPTH="50x")), "resnext50_32x4d")]
    pairs += [(("repvgg", dict(DEPTH=v)), f"repvgg_{v.lower()}") for v in REPVGG_SPECS if f"repvgg_{v.lower()}"
              in timm.list_models("repvgg*")]
    for (name, overrides), timm_name in pairs:
        ours = _build_meta(name, **overrides)
        with torch.device("meta"):
            ref = timm.create_model(timm_name, num_classes=0)
        assert _params(ours) == _params(ref), (name, overrides, timm_name)
    with torch.device("meta"):
        base = VisionTransformer((224, 224), **{k: getattr(VIT_SPECS["base"], k) for k in
                                                ("embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias")})
        ref = timm.create_model("vit_base_patch16_224", num_classes=0)
    assert _params(base) == _params(ref)


def test_repvgg_deploy_parameter_counts_match_the_paper():
    """RepVGG paper, Table 4 (inference-time params incl. the 1000-way classifier), in millions."""
    published = {"A0": 8.30, "A1": 12.78, "A2": 25.49, "B0": 14.33, "B1": 51.82, "B1g2": 41.36, "B1g4": 36.12,
                 "B2": 80.31, "B2g4": 55.77, "B3": 110.96, "B3g4": 75.62}
    for variant, millions in published.items():
        model = _build_meta("repvgg", DEPTH=variant, DEPLOY=True)
        with_classifier = _params(model) + model.out_channels * 1000 + 1000
        assert abs(with_classifier / 1e6 - millions) < 0.01, (variant, with_classifier)


def test_torchvision_families_parameter_counts():
    import torchvision.models as tv

    def trunk(model: nn.Module, head: str) -> int:
        return _params(model) - sum(p.numel() for n, p in model.named_parameters() if n.startswith(head))

    with torch.device("meta"):
        for variant in EFFICIENTNET_SCALING:
            assert _params(_build_meta("efficientnet", DEPTH=variant)) == trunk(
                getattr(tv, f"efficientnet_{variant}")(), "classifier"), variant
        for size, fn in zip(SHUFFLENET_CHANNELS, ("x0_5", "x1_0", "x1_5", "x2_0")):
            assert _params(_build_meta("shufflenetv2", DEPTH=size)) == trunk(
                getattr(tv, f"shufflenet_v2_{fn}")(), "fc"), size
        for size in _V3_TABLES:
            assert _params(_build_meta("mobilenetv3", DEPTH=size)) == trunk(
                getattr(tv, f"mobilenet_v3_{size}")(), "classifier"), size
        for width in (1.0, 0.75, 0.5, 0.35):
            assert _params(_build_meta("mobilenetv2", WIDTH_MULT=width)) == trunk(
                tv.mobilenet_v2(width_mult=width), "classifier"), width


# ------------------------------------------------------------------------------------------------
# FastReID: same state-dict layout and same features (its checkpoints load as is)
# ------------------------------------------------------------------------------------------------
def _import_fastreid_backbones():
    config, backbones = import_fastreid("fastreid.config", "fastreid.modeling.backbones")
    return config.get_cfg, backbones.BACKBONE_REGISTRY


# (name, overrides, compare numerically on CPU): one member of each family is run, the rest are
# compared by state-dict layout on the meta device
FASTREID_CASES = (
    [("build_resnest_backbone", dict(DEPTH=d, LAST_STRIDE=s), (d, s) == ("50x", 1))
     for d in RESNEST_SPECS for s in (1, 2)]
    + [("build_resnext_backbone", dict(DEPTH=d), False) for d in RESNEXT_SPECS]
    + [("build_resnext_backbone", dict(DEPTH="50x", WITH_NL=True, NL_TYPE="fastreid_dot_product"), True)]
    + [("build_osnet_backbone", dict(DEPTH=d, WITH_IBN=ibn), d == "x0_5") for d in OSNET_CHANNELS for ibn in (0, 1)]
    + [("build_repvgg_backbone", dict(DEPTH=v), v == "A0") for v in REPVGG_SPECS]
)


def test_fastreid_layouts_and_features():
    fastreid_cfg, fastreid_backbones = _import_fastreid_backbones()
    for name, overrides, numeric in FASTREID_CASES:
        fcfg = fastreid_cfg()
        for key, value in overrides.items():
            if key != "NL_TYPE":  # omnireid-only key: FastReID has one non-local form
                fcfg.MODEL.BACKBONE[key] = value
        fcfg.MODEL.BACKBONE.PRETRAIN = False
        with torch.device("cpu" if numeric else "meta"):
            ref = fastreid_backbones.get(name)(fcfg)
            ours = BACKBONE_REGISTRY.get(name)(cfg_with(name, **overrides))
        ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        assert ref_shapes == {k: tuple(v.shape) for k, v in ours.state_dict().items()}, (name, overrides)
        if numeric:
            torch.manual_seed(0)
            _randomise_norm_stats(ref)
            ours.load_state_dict(ref.state_dict(), strict=True)
            x = torch.randn(2, 3, 64, 32)
            with torch.no_grad():
                expected = ref.eval()(x)
                got = ours.eval()(x)
            assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (name, overrides)


def test_fastreid_vit_camera_embedding_semantics():
    """FastReID's ViT class with a camera count (its builder never passes one) vs ours with camids."""
    _import_fastreid_backbones()
    from fastreid.modeling.backbones.vision_transformer import VisionTransformer as FastReIDViT

    torch.manual_seed(0)
    ref = FastReIDViT(img_size=(64, 32), stride_size=12, embed_dim=32, depth=2, num_heads=2, qkv_bias=True,
                      camera=3, sie_xishu=2.0).eval()
    ours = VisionTransformer((64, 32), stride_size=(12, 12), embed_dim=32, depth=2, num_heads=2, num_cameras=3,
                             sie_coe=2.0).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, camids = torch.randn(3, 3, 64, 32), torch.tensor([2, 0, 1])
    with torch.no_grad():
        assert torch.allclose(ours(x, camids=camids), ref(x, camera_id=camids), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Errors and pretrained weights
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,key,value", [("resnest", "DEPTH", "51x"), ("osnet", "DEPTH", "x2_0"),
                                            ("regnet", "DEPTH", "800z"), ("repvgg", "DEPTH", "C0"),
                                            ("mobilenetv2", "WIDTH_MULT", 0.0), ("timm", "VARIANT", "no_such_net"),
                                            ("timm", "VARIANT", "")])
def test_bad_config_values_are_clear_errors(name, key, value):
    with pytest.raises(ConfigError, match=f"MODEL.BACKBONE.{key}"):
        BACKBONE_REGISTRY.get(name)(cfg_with(name, **{key: value}))


def test_manifest_entries_are_complete():
    from omnireid.modeling.weights import manifest

    entries = manifest()
    assert {"resnest50", "osnet_x1_0", "osnet_ibn_x1_0", "repvgg_A0", "efficientnet_b7", "mobilenetv3_small",
            "shufflenetv2_2.0x", "regnet_800x", "vit_base_patch16_224", "resnext101_32x4d_ibn_a"} <= set(entries)
    for entry in entries.values():
        assert entry.file and entry.url and len(entry.input_size) == 2 and len(entry.mean) == len(entry.std) == 3
        assert entry.sha256 == "" or all(c in "0123456789abcdef" for c in entry.sha256)


def test_pretrained_lookup_missing_mismatching_and_loading(tmp_path, monkeypatch):
    import hashlib

    from omnireid.modeling import weights

    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    cfg = cfg_with("osnet", DEPTH="x0_25", PRETRAIN=True)
    with pytest.raises(FileNotFoundError) as missing:
        BACKBONE_REGISTRY.get("osnet")(cfg)
    assert "osnet_x0_25_imagenet.pth" in str(missing.value) and str(tmp_path) in str(missing.value)
    assert "drive.google.com" in str(missing.value)

    torch.manual_seed(3)
    source = BACKBONE_REGISTRY.get("osnet")(cfg_with("osnet", DEPTH="x0_25")).eval()
    state = {**source.state_dict(), "classifier.weight": torch.zeros(10, 128)}
    torch.save(state, tmp_path / "osnet_x0_25_imagenet.pth")
    loaded = BACKBONE_REGISTRY.get("osnet")(cfg).eval()  # no checksum published: used with a warning
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))

    # a checksummed entry: the right file passes, a different one is refused naming the URL
    digest = hashlib.sha256((tmp_path / "osnet_x0_25_imagenet.pth").read_bytes()).hexdigest()
    manifest_path = tmp_path / "manifest.yaml"
    manifest_path.write_text(f"net:\n  file: osnet_x0_25_imagenet.pth\n  sha256: '{digest[:12]}'\n  url: https://x/y\n"
                             "  input_size: [256, 128]\n  mean: [0.5, 0.5, 0.5]\n  std: [0.5, 0.5, 0.5]\n")
    assert weights.resolve_pretrained_path("", "net", str(manifest_path)).endswith("osnet_x0_25_imagenet.pth")
    manifest_path.write_text(manifest_path.read_text().replace(digest[:12], "0" * 12))
    weights._read_manifest.cache_clear()
    from omnireid.utils.errors import CheckpointError

    with pytest.raises(CheckpointError, match="https://x/y"):
        weights.resolve_pretrained_path("", "net", str(manifest_path))


def test_timm_backbone_loads_a_local_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv3_small_050", pretrained=False).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model = BACKBONE_REGISTRY.get("timm")(cfg_with("timm", VARIANT="mobilenetv3_small_050", PRETRAIN=True,
                                                   PRETRAIN_PATH=str(tmp_path / "w.pth"))).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)[-1]
        got = model(x)
    assert got.shape[1] == model.out_channels
    assert torch.allclose(got, expected, atol=1e-5)


def test_baseline_passes_camids_to_camera_aware_backbones():
    """The meta-architecture protocol: backbones with ``accepts_camids`` receive the batch's camids."""
    from omnireid.modeling.heads import build_heads
    from omnireid.modeling.losses import build_losses
    from omnireid.modeling.meta_arch.baseline import Baseline

    cfg = get_cfg()
    cfg.MODEL.HEADS.NUM_CLASSES = 5
    torch.manual_seed(0)
    backbone = VisionTransformer((64, 32), embed_dim=32, depth=1, num_heads=2, num_cameras=3, sie_coe=3.0)
    model = Baseline(backbone=backbone, heads=build_heads(cfg, in_channels=32), losses=build_losses(cfg),
                     pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD).eval()
    images = torch.randint(0, 256, (1, 3, 64, 32), dtype=torch.uint8).expand(3, -1, -1, -1)
    with torch.no_grad():
        per_camera = model({"images": images, "camids": torch.tensor([0, 1, 2])})["features"]
        bare = model(images)["features"]  # export path: no camera term
        direct = model.heads(backbone(model.preprocess_image(images), camids=torch.tensor([0, 1, 2])))["features"]
    assert torch.allclose(per_camera, direct, atol=1e-6)
    assert (per_camera[0] - per_camera[1]).abs().max() > 1e-4
    assert torch.allclose(bare[0], bare[1], atol=1e-6)
    model.train()
    losses = model({"images": images, "camids": torch.tensor([0, 1, 2]), "targets": torch.tensor([0, 1, 2])})
    sum(losses.values()).backward()
    assert backbone.sie_embed.grad is not None and backbone.sie_embed.grad.abs().sum() > 0


@pytest.mark.parametrize("name,depth", [("shufflenetv2", "0.5x"), ("regnet", "200y"), ("mobilenetv3", "small")])
def test_norm_option_reaches_torchvision_built_families(name, depth):
    model = BACKBONE_REGISTRY.get(name)(cfg_with(name, DEPTH=depth, NORM="GN")).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    out = model(torch.randn(1, 3, 64, 32))  # group norm trains even with a batch of one
    out.mean().backward()


@pytest.mark.parametrize("name,overrides", [
    ("resnest", dict(DEPTH="101x")), ("resnext", dict(DEPTH="101x", WITH_IBN=True)),
    ("osnet", dict(DEPTH="x1_0", WITH_IBN=True)),
    ("repvgg", dict(DEPTH="B1g4", DEPLOY=True)), ("vit", dict(DEPTH="base")), ("efficientnet", dict(DEPTH="b3")),
    ("mobilenetv2", {}), ("mobilenetv3", dict(DEPTH="Small")), ("shufflenetv2", dict(DEPTH="1.5x")),
    ("regnet", dict(DEPTH="1600y"))])
def test_builders_find_their_manifest_entry(name, overrides, tmp_path, monkeypatch):
    """PRETRAIN without a path: the error names the listed file, the folder and the source URL."""
    from omnireid.modeling import weights

    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path))
    with torch.device("meta"), pytest.raises(FileNotFoundError) as error:
        BACKBONE_REGISTRY.get(name)(cfg_with(name, PRETRAIN=True, **overrides))
    listed = [e for e in weights.manifest().values() if e.file in str(error.value)]
    assert len(listed) == 1 and listed[0].url in str(error.value) and str(tmp_path) in str(error.value)


def test_vit_pretrained_remap_resamples_positions_and_drops_the_classifier(tmp_path):
    from omnireid.modeling.backbones.pretrained import load_pretrained_weights
    from omnireid.modeling.backbones.vision_transformer import _pretrained_remap

    torch.manual_seed(0)
    square = VisionTransformer((32, 32), embed_dim=16, depth=1, num_heads=2)  # a 2x2 ImageNet-style grid
    state = dict(square.state_dict())
    grid_value = torch.randn(1, 1, 16)
    state["pos_embed"] = torch.cat([torch.randn(1, 1, 16), grid_value.expand(1, 4, 16)], dim=1)
    state["head.weight"] = torch.zeros(10, 16)
    torch.save(state, tmp_path / "vit.pth")
    target = VisionTransformer((64, 32), stride_size=(12, 12), embed_dim=16, depth=1, num_heads=2)
    report = load_pretrained_weights(target, str(tmp_path / "vit.pth"), remap=_pretrained_remap(target))
    assert report.complete
    grid = target.patch_embed.num_y * target.patch_embed.num_x
    assert target.pos_embed.shape == (1, 1 + grid, 16)
    assert torch.equal(target.pos_embed[:, :1], state["pos_embed"][:, :1])  # CLS slot kept
    assert torch.allclose(target.pos_embed[:, 1:], grid_value.expand(1, grid, 16), atol=1e-6)  # constant stays
    assert torch.equal(target.blocks[0].attn.qkv.weight, square.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("variant", ["200x", "800y"])
def test_fastreid_regnet_checkpoint_loads_and_matches(variant, tmp_path):
    """FastReID's pycls RegNet (its own width derivation and names) -> our torchvision-layout RegNet."""
    import os

    _import_fastreid_backbones()
    import fastreid.modeling.backbones.regnet.regnet as fastreid_regnet
    from fastreid.modeling.backbones.regnet.config import cfg as fastreid_regnet_cfg

    mf, kind = variant[:-1], variant[-1].upper()
    size = f"{mf}MF" if int(mf) < 1000 else f"{int(mf) / 1000:.1f}GF"
    fastreid_regnet_cfg.merge_from_file(os.path.join(os.path.dirname(fastreid_regnet.__file__),
                                                     f"regnet{kind.lower()}", f"RegNet{kind}-{size}_dds_8gpu.yaml"))
    torch.manual_seed(0)
    ref = fastreid_regnet.RegNet(1, "BN").eval()
    _randomise_norm_stats(ref)
    torch.save({"model": {f"backbone.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "fastreid.pth")
    ours = BACKBONE_REGISTRY.get("regnet")(cfg_with("regnet", DEPTH=variant, PRETRAIN=True,
                                                    PRETRAIN_PATH=str(tmp_path / "fastreid.pth"))).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
