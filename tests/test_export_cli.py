"""``omnireid export`` and ``omnireid extract`` end to end: checkpoint + config in; artifact, report,
features out."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export_models import INPUT_SIZE, build_eval_model, recipe_opts

from omnireid.cli.main import main
from omnireid.inference import Predictor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, _ = build_eval_model("bot_r18")
    torch.save({"model": model.state_dict(), "iteration": 10}, root / "model_final.pth")
    config_file, opts = recipe_opts("bot_r18")
    return root, model, config_file, opts


def test_export_onnx_from_checkpoint_and_config(trained):
    root, model, config_file, opts = trained
    out = root / "onnx"
    weights = str(root / "model_final.pth")
    # overrides before the options, as in `omnireid export --config-file F MODEL.WEIGHTS W --format onnx ...`
    code = main(["export", "--config-file", config_file, *opts, "MODEL.WEIGHTS", weights,
                 "--format", "onnx", "--output", str(out), "--parity-images", "6", "--latency-runs", "1"])
    assert code == 0
    report = json.loads((out / "export_report.json").read_text())
    for key in ("format", "input_shape", "opset", "output_names", "parity", "latency_ms", "version", "weights"):
        assert key in report, key
    assert report["format"] == "onnx" and report["output_names"] == ["features"] and report["weights"] == weights
    assert report["input_shape"] == ["batch", 3, *INPUT_SIZE] and report["opset"] == 17
    parity = report["parity"]
    assert parity["passed"] and parity["images"] == 6
    assert parity["outputs"]["features"]["max_abs_diff"] <= 1e-3 and parity["outputs"]["features"]["min_cosine"] >= 0.9999
    assert report["latency_ms"]["onnxruntime_ms"] > 0 and report["latency_ms"]["pytorch_eager_ms"] > 0
    # the exported graph carries the checkpoint's weights, not fresh ones
    images = torch.randint(0, 256, (2, 3, *INPUT_SIZE), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(images.float())["features"].numpy()
    np.testing.assert_allclose(Predictor.from_artifact(str(out / "model.onnx"))(images), expected, atol=1e-3, rtol=0)


def test_extract_folder_and_dataset_split(trained, synthetic_root, tmp_path):
    root, model, config_file, opts = trained
    onnx_path = root / "onnx" / "model.onnx"
    if not onnx_path.exists():
        main(["export", "--config-file", config_file, *opts, "MODEL.WEIGHTS", str(root / "model_final.pth"),
              "--format", "onnx", "--output", str(root / "onnx"), "--parity-images", "0"])
    query_dir = f"{synthetic_root}/Market-1501-v15.09.15/query"
    npz = tmp_path / "folder.npz"
    assert main(["extract", "--artifact", str(onnx_path), "--images", query_dir, "--output", str(npz),
                 "--batch-size", "4"]) == 0
    folder = np.load(npz)
    assert folder["features"].shape[0] == len(folder["paths"]) and folder["features"].shape[1] == 512
    assert list(folder["paths"]) == sorted(folder["paths"])

    npz2 = tmp_path / "query.npz"
    assert main(["extract", "--config-file", config_file, *opts, "DATASETS.ROOT", synthetic_root,
                 "MODEL.WEIGHTS", str(root / "model_final.pth"), "--dataset", "Market1501:query",
                 "--output", str(npz2)]) == 0
    split = np.load(npz2)
    assert set(split.files) == {"features", "paths", "pids", "camids"}
    # same images through the checkpoint (PyTorch) and through ONNX give the same features
    order = {p: i for i, p in enumerate(folder["paths"])}
    rows = [order[p] for p in split["paths"]]
    np.testing.assert_allclose(split["features"], folder["features"][rows], atol=1e-3, rtol=0)
    assert split["pids"].dtype == np.int64 and (split["pids"] > 0).all()


def test_cli_argument_errors(trained, tmp_path, capsys):
    _, _, config_file, opts = trained
    cases = [
        (["export", "--config-file", config_file, *opts], "omnireid export: error: --format and --output required"),
        (["export", "--config-file", config_file, *opts, "--format", "onnxx", "--output", str(tmp_path)],
         "omnireid export: error: --format: Unknown export format 'onnxx'. Did you mean 'onnx'?"),
        (["extract", "--artifact", "x.onnx", "--output", str(tmp_path / "f.npz")],
         "omnireid extract: error: give exactly one of --images DIR and --dataset NAME:SPLIT"),
    ]
    for argv, line in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(line), err


def test_parity_images_come_from_the_configured_test_set(synthetic_root):
    from PIL import Image

    from omnireid.export.parity import dataset_images
    from export_models import make_cfg

    cfg = make_cfg("bot_r18", "DATASETS.ROOT", synthetic_root)
    images, source = dataset_images(cfg, count=4)
    assert source == "Market1501 test set (4 images)"
    assert images.dtype == torch.uint8 and images.shape == (4, 3, *INPUT_SIZE)
    # the first pick is the first query image, through the test transform (resize to 64x32)
    from omnireid.data.datasets import build_dataset
    from omnireid.data.transforms import build_transforms

    first = build_dataset(cfg, "Market1501").query[0]["img_path"]
    expected = build_transforms(cfg, is_train=False)(Image.open(first).convert("RGB"))
    assert torch.equal(images[0], expected)
    missing = make_cfg("bot_r18")  # DATASETS.ROOT points nowhere: synthetic images instead
    images, source = dataset_images(missing, count=3)
    assert "synthetic" in source and images.shape == (3, 3, *INPUT_SIZE)
