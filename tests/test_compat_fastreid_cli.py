"""`omnireid convert-fastreid` end to end, and a check that the translated ResNet form matters.

FastReID 1.4.0 (PyPI) builds the reference model, as in tests/test_compat_fastreid.py.
"""
from __future__ import annotations

import os

import torch

from omnireid.compat import convert_fastreid
from omnireid.modeling import build_model
from omnireid.modeling.weights import load_weights
from test_compat_fastreid import build_fastreid_reference, fastreid_yaml, features


def test_torchvision_stem_pooling_would_not_reproduce_fastreid(tmp_path):
    """The ResNet form set by the translation matters: without it features differ
    (so tests/test_compat_fastreid.py can fail)."""
    yaml_text, height = fastreid_yaml(depth="18x", feat_dim=512), 64
    reference, config_path, weights_path = build_fastreid_reference(tmp_path, yaml_text, height)
    converted = convert_fastreid(config_path, weights_path, str(tmp_path / "converted"),
                                 opts=["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.STEM_POOL_CEIL", "False"])
    model = build_model(converted.cfg)
    load_weights(model, converted.weights_path, strict=True)
    model.eval()
    expected, actual = features(reference, model, height)
    assert (expected - actual).abs().max().item() > 1e-2


def test_convert_cli_then_eval_only(tmp_path, synthetic_root):
    """`omnireid convert-fastreid` output evaluates with `omnireid train --eval-only`."""
    from omnireid.cli.main import main

    yaml_text = fastreid_yaml(depth="18x", feat_dim=512)
    _, fastreid_config, weights_path = build_fastreid_reference(tmp_path, yaml_text, 64)
    config_path = str(tmp_path / "fastreid_v1.yml")  # the same model, with FastReID V1.0 input keys
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(yaml_text + "INPUT:\n  DO_FLIP: True\n  SIZE_TEST: [64, 32]\n")
    out = str(tmp_path / "converted")
    assert main(["convert-fastreid", "--config-file", config_path, "--weights", weights_path, "--output", out]) == 0
    for name in ("config.yaml", "model_final.pth", "conversion_report.txt"):
        assert os.path.isfile(os.path.join(out, name))
    report = open(os.path.join(out, "conversion_report.txt"), encoding="utf-8").read()
    assert "INPUT.DO_FLIP=True to INPUT.FLIP.ENABLED=True" in report
    assert "heads.weight -> heads.classifier.weight" in report
    saved = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert "heads.classifier.weight" in saved["model"] and "heads.weight" not in saved["model"]
    ev = str(tmp_path / "eval")
    code = main(["train", "--eval-only", "--config-file", os.path.join(out, "config.yaml"),
                 "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "MODEL.DEVICE", "cpu", "OUTPUT_DIR", ev,
                 "DATASETS.ROOT", synthetic_root, "DATASETS.TESTS", "Market1501", "DATALOADER.NUM_WORKERS", "0",
                 "TEST.IMS_PER_BATCH", "32"])
    assert code == 0
    log = open(os.path.join(ev, "log.txt"), encoding="utf-8").read()
    assert "tensors into Baseline from" in log and "missing" not in log.lower()
