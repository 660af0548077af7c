"""FastReID checkpoint key mapping and safe loading (no FastReID install needed)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from omnireid.compat import convert_fastreid, load_fastreid_checkpoint, rename_fastreid_keys
from omnireid.modeling.weights import WeightsError
from omnireid.config import get_cfg
from omnireid.modeling import build_model


def test_rename_rules():
    t = torch.zeros(1)
    mapped = rename_fastreid_keys({
        "heads.bnneck.weight": t, "heads.bnneck.running_var": t, "heads.weight": t,
        "heads.bottleneck.1.weight": t, "b21_head.weight": t, "module.backbone.conv1.weight": t,
        "heads.pool_layer.p": t, "pixel_mean": torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1),
    })
    assert set(mapped.state) == {"heads.bottleneck.0.weight", "heads.bottleneck.0.running_var",
                                 "heads.bottleneck.1.weight", "heads.classifier.weight", "b21_head.classifier.weight",
                                 "backbone.conv1.weight", "heads.pool_layer.p"}
    assert mapped.pixel_stats == {"MODEL.PIXEL_MEAN": [1.0, 2.0, 3.0]}
    assert ("heads.weight", "heads.classifier.weight") in mapped.renames["FastReID 1.x EmbeddingHead class weights"]


def test_two_names_for_one_parameter_is_an_error():
    with pytest.raises(RuntimeError, match="heads.bottleneck.0.weight"):
        rename_fastreid_keys({"heads.bnneck.weight": torch.zeros(1), "heads.bottleneck.0.weight": torch.zeros(1)})


PRE_V1_R18 = """\
MODEL:
  BACKBONE:
    DEPTH: 18
    PRETRAIN: True
  HEADS:
    NAME: BNneckHead
    NUM_CLASSES: 0
"""


def _old_style_checkpoint(tmp_path):
    """An omnireid R18 + BNNeck model saved under pre-V1.0 FastReID names, with persistent pixel
    statistics and without num_batches_tracked."""
    cfg = get_cfg().merge_from_list(["MODEL.BACKBONE.DEPTH", "18x", "MODEL.HEADS.WITH_BNNECK", "True",
                                     "MODEL.HEADS.NUM_CLASSES", "9", "MODEL.DEVICE", "cpu",
                                     "MODEL.BACKBONE.STEM_POOL_CEIL", "True"])
    torch.manual_seed(3)
    model = build_model(cfg)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    old = {}
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            continue
        old[key.replace("heads.bottleneck.0.", "heads.bnneck.")] = value + 0.5 if "running_var" in key else value
    old["pixel_mean"] = torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1)
    old["pixel_std"] = torch.tensor([60.0, 60.0, 60.0]).view(1, 3, 1, 1)
    path = tmp_path / "old.pth"
    return original, old, path


def test_pre_v1_checkpoint_converts_with_every_tensor_in_place(tmp_path):
    original, old, path = _old_style_checkpoint(tmp_path)
    torch.save({"model": old, "optimizer": {"state": {}, "param_groups": []}, "iteration": 7}, path)
    config = tmp_path / "fr.yml"
    config.write_text(PRE_V1_R18)
    result = convert_fastreid(str(config), str(path), str(tmp_path / "out"))
    assert result.cfg.MODEL.HEADS.NUM_CLASSES == 9  # from the classifier's shape
    assert result.cfg.MODEL.PIXEL_MEAN == [120.0, 110.0, 100.0] and result.cfg.MODEL.PIXEL_STD == [60.0] * 3
    assert result.cfg.MODEL.BACKBONE.PRETRAIN is False
    saved = torch.load(result.weights_path, weights_only=True)["model"]
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            continue
        expected = value + 0.5 if "running_var" in key else value
        assert torch.equal(saved[key], expected), key
    report = open(result.report_path, encoding="utf-8").read()
    assert "heads.bnneck.weight -> heads.bottleneck.0.weight" in report
    assert "num_batches_tracked counters absent" in report


def test_wrong_config_for_the_weights_is_a_clear_error(tmp_path):
    _, old, path = _old_style_checkpoint(tmp_path)
    torch.save({"model": old}, path)
    config = tmp_path / "fr.yml"
    config.write_text(PRE_V1_R18.replace("DEPTH: 18", "DEPTH: 34"))
    with pytest.raises(WeightsError, match=r"old.pth does not fit the Baseline.*missing from the file \(.*layer1\.2.*"
                                          r"wrong config for these weights"):
        convert_fastreid(str(config), str(path), str(tmp_path / "out"))


def test_numpy_scalars_need_the_explicit_allowlist(tmp_path):
    path = tmp_path / "np.pth"
    torch.save({"model": {"w": torch.ones(2)}, "best_mAP": np.float64(81.5)}, path)
    with pytest.raises(RuntimeError, match="--allow-numpy-scalars"):
        load_fastreid_checkpoint(str(path))
    loaded = load_fastreid_checkpoint(str(path), allow_numpy_scalars=True)
    assert torch.equal(loaded["model"]["w"], torch.ones(2)) and float(loaded["best_mAP"]) == 81.5


def test_other_pickled_objects_are_refused_even_with_the_allowlist(tmp_path):
    path = tmp_path / "args.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(RuntimeError, match="argparse.Namespace.*re-save only the weights"):
        load_fastreid_checkpoint(str(path), allow_numpy_scalars=True)


def test_fastreid_resnet_forms():
    """STEM_POOL_CEIL: no padding + ceil_mode (FastReID); NL_TYPE fastreid_dot_product: 1 inner channel."""
    import torch.nn.functional as F

    from omnireid.modeling.backbones import build_backbone

    cfg = get_cfg().merge_from_list(["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.WITH_NL", "True",
                                     "MODEL.BACKBONE.STEM_POOL_CEIL", "True",
                                     "MODEL.BACKBONE.NL_TYPE", "fastreid_dot_product"])
    backbone = build_backbone(cfg).eval()
    x = torch.randn(1, 3, 70, 38)
    with torch.no_grad():
        stem = backbone.relu(backbone.bn1(backbone.conv1(x)))
        assert torch.equal(backbone.maxpool(stem), F.max_pool2d(stem, 3, 2, 0, ceil_mode=True))
        assert backbone.maxpool(stem).shape[-2:] == (17, 9)  # ceil((35-3)/2)+1, ceil((19-3)/2)+1 (torchvision: 18x10)
    assert backbone.NL_2[0].g.out_channels == 1 and backbone.NL_2[0].embedded_gaussian is False
    with pytest.raises(ValueError, match="NL_TYPE"):
        build_backbone(cfg.merge_from_list(["MODEL.BACKBONE.NL_TYPE", "gaussian"]))
