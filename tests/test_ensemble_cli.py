"""`omnireid ensemble` / `omnireid submit` end to end on tiny models, and their one-line user errors."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from omnireid.cli.main import main


def _save_model(make_tiny_cfg, root: str, folder, size: str, seed: int) -> tuple[str, str]:
    """A randomly initialised tiny model at input ``size`` with its config, as a training run leaves them."""
    from omnireid.modeling import build_model

    cfg = make_tiny_cfg(root, str(folder), "INPUT.SIZE_TRAIN", size, "INPUT.SIZE_TEST", size,
                        "MODEL.HEADS.NUM_CLASSES", "12", "TEST.FLIP.ENABLED", "False", "DATALOADER.NUM_WORKERS", "0")
    torch.manual_seed(seed)
    model = build_model(cfg)
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "config.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    weights = os.path.join(folder, "model_final.pth")
    torch.save({"model": model.state_dict()}, weights)
    return config, weights


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> str:
    """A very small synthetic Market-1501-layout set (a few dozen test images): the CLI runs stay fast."""
    from omnireid.data.synthetic import write_synthetic_reid

    root = tmp_path_factory.mktemp("ensemble_data")
    write_synthetic_reid(str(root / "Market-1501-v15.09.15"), seed=0, num_train_ids=4, num_test_ids=5,
                         num_cameras=2, images_per_camera=(1, 2), queries_per_id=1, num_distractors=4, num_junk=2)
    return str(root)


@pytest.fixture(scope="module")
def two_models(small_root, tmp_path_factory):
    from conftest import tiny_reid_cfg

    base = tmp_path_factory.mktemp("ensemble_models")
    a = _save_model(tiny_reid_cfg, small_root, base / "a", "[64, 32]", 1)
    b = _save_model(tiny_reid_cfg, small_root, base / "b", "[48, 24]", 2)  # another input size
    return a, b


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ensemble_rows_equal_each_models_eval_only(two_models, tmp_path, capsys):
    from omnireid.config import setup_cfg
    from omnireid.engine import evaluate
    from omnireid.modeling import build_deployable_model

    (ca, wa), (cb, wb) = two_models
    code, out, err = _run(capsys, "ensemble", "--models", f"{ca}:{wa}", f"{cb}:{wb}", "--weights", "1", "0.5",
                          "--fusion", "distance", "OUTPUT_DIR", str(tmp_path))
    assert code == 0, err
    summary = json.loads((tmp_path / "ensemble_results.json").read_text())
    assert list(summary["metrics"]) == ["a", "b", "ensemble"] and summary["weights"] == [1.0, 0.5]
    assert "| ensemble |" in out and "eval peak MB" in out
    for name, config, weights in (("a", ca, wa), ("b", cb, wb)):
        cfg = setup_cfg(config, ["OUTPUT_DIR", str(tmp_path / name)])
        alone = evaluate(cfg, build_deployable_model(cfg, weights))  # what `train --eval-only` reports
        assert summary["metrics"][name]["Market1501"] == pytest.approx(alone["Market1501"], abs=1e-9)


def _naic_test_layout(small_root: str, root) -> None:
    """An unlabelled NAIC test set (query/ and gallery/ folders) made of synthetic test images."""
    market = os.path.join(small_root, "Market-1501-v15.09.15")
    for split, source, count in (("query", "query", 4), ("gallery", "bounding_box_test", 12)):
        folder = root / "naic" / "round2" / "image_A" / split
        folder.mkdir(parents=True)
        for name in sorted(os.listdir(os.path.join(market, source)))[:count]:
            shutil.copy(os.path.join(market, source, name), folder / name.replace(".jpg", ".png"))


def test_submit_single_model_equals_brute_force_on_extracted_features(two_models, small_root, tmp_path, capsys):
    (ca, wa), _ = two_models
    _naic_test_layout(small_root, tmp_path)
    data = ["DATASETS.ROOT", str(tmp_path), "OUTPUT_DIR", str(tmp_path / "out")]
    code, _, err = _run(capsys, "submit", "--models", f"{ca}:{wa}", "--dataset", "NAIC20_R2A", "--topk", "5",
                        "--no-flip", "--output", str(tmp_path / "sub.json"), "--distmat", str(tmp_path / "d.npy"), *data)
    assert code == 0, err
    ranked = json.loads((tmp_path / "sub.json").read_text())
    feats = {}
    for split in ("query", "gallery"):  # an independent path: `omnireid extract` through the Predictor
        out = str(tmp_path / f"{split}.npz")
        assert _run(capsys, "extract", "--config-file", ca, "--artifact", wa, "--dataset", f"NAIC20_R2A:{split}",
                    "--output", out, *data)[0] == 0
        feats[split] = np.load(out)
    q = torch.nn.functional.normalize(torch.from_numpy(feats["query"]["features"]), dim=1)
    g = torch.nn.functional.normalize(torch.from_numpy(feats["gallery"]["features"]), dim=1)
    dist = (1 - q @ g.T).numpy()
    q_names = [os.path.basename(p) for p in feats["query"]["paths"]]
    g_names = [os.path.basename(p) for p in feats["gallery"]["paths"]]
    brute = {qn: [g_names[j] for j in np.argsort(row, kind="stable")[:5]] for qn, row in zip(q_names, dist)}
    assert ranked == brute
    np.testing.assert_allclose(np.load(tmp_path / "d.npy").astype(np.float32), dist, atol=2e-3)


def test_submit_ensemble_of_two_sizes(two_models, small_root, tmp_path, capsys):
    (ca, wa), (cb, wb) = two_models
    _naic_test_layout(small_root, tmp_path)
    code, _, err = _run(capsys, "submit", "--models", f"{ca}:{wa}", f"{cb}:{wb}", "--fusion", "concat", "--flip",
                        "--output", str(tmp_path / "sub.json"), "--distmat", str(tmp_path / "d.npy"),
                        "DATASETS.ROOT", str(tmp_path), "DATASETS.TESTS", "['NAIC20_R2A']", "TEST.RERANK.ENABLED", "True",
                        "TEST.RERANK.K1", "4", "TEST.RERANK.K2", "2", "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 0, err
    ranked = json.loads((tmp_path / "sub.json").read_text())
    dist = np.load(tmp_path / "d.npy")
    assert dist.dtype == np.float16 and dist.shape == (4, 12)
    gallery = sorted(os.listdir(tmp_path / "naic/round2/image_A/gallery"))
    assert sorted(ranked) == sorted(os.listdir(tmp_path / "naic/round2/image_A/query"))
    for row, names in zip(dist.astype(np.float32), (ranked[k] for k in sorted(ranked))):
        assert len(names) == 12 == len(set(names))  # --topk 200 > gallery: the whole gallery, ranked
        ranked_d = row[[gallery.index(n) for n in names]]
        assert np.all(np.diff(ranked_d) >= -2e-3)  # nearest first (float16 file)


@pytest.mark.parametrize("spec, extra, message", [
    ("{tmp}/missing.yml:{tmp}/missing.pth", [], "file not found"),
    ("{tmp}/notes.txt:{w}", [], "before ':' must be a config file"),
    ("{c}:", [], "nothing after ':'"),
    ("{tmp}/lonely/model.pth", [], "needs config.yaml next to it"),
    ("{c}:{w}", ["--weights", "1", "2"], "2 weights for 1 models"),
    ("{c}:{w}", ["--weights", "-1"], "finite numbers > 0"),
    ("{c}:{w}", ["--fusion", "median"], "expected one of concat, distance"),
    ("", [], "at least one model"),
])
def test_bad_models_are_one_line_errors(two_models, tmp_path, capsys, spec, extra, message):
    (c, w), _ = two_models
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "model.pth").write_bytes(b"")
    models = [spec.format(tmp=tmp_path, c=c, w=w)] if spec else []
    for command in ("ensemble", "submit"):
        tail = ["--output", str(tmp_path / "x.json")] if command == "submit" else []
        code, _, err = _run(capsys, command, "--models", *models, *extra, *tail)
        assert code == 2, err
        assert err.count("\n") == 1 and f"omnireid {command}: error:" in err and message in err, err


def test_exported_artifact_member_is_fed_at_its_own_size(two_models, small_root, tmp_path, capsys):
    """An ONNX member (32x16 input) next to the datasets/TEST settings of a config: its row equals the
    reid protocol on the features `omnireid extract` computes with the same artifact."""
    from serve_helpers import make_tiny_onnx

    from omnireid.evaluation import evaluate_features

    (ca, _), _ = two_models
    artifact = make_tiny_onnx(str(tmp_path / "tiny.onnx"))
    code, _, err = _run(capsys, "ensemble", "--models", artifact, "--config-file", ca, "--no-flip",
                        "OUTPUT_DIR", str(tmp_path / "out"))
    assert code == 0, err
    row = json.loads((tmp_path / "out" / "ensemble_results.json").read_text())["metrics"]["tiny"]["Market1501"]
    out = str(tmp_path / "test.npz")
    assert _run(capsys, "extract", "--config-file", ca, "--artifact", artifact, "--dataset", "Market1501:test",
                "--output", out)[0] == 0
    data = np.load(out)
    nq = len(os.listdir(os.path.join(small_root, "Market-1501-v15.09.15", "query")))
    f, p, c = data["features"], data["pids"], data["camids"]
    ref = evaluate_features(f[:nq], f[nq:], p[:nq], p[nq:], c[:nq], c[nq:]).summary()
    assert row == pytest.approx(ref, abs=1e-4)


def test_default_output_is_a_subfolder_not_the_members_training_folder(two_models, tmp_path, capsys):
    (ca, wa), _ = two_models
    config = tmp_path / "run" / "config.yaml"
    config.parent.mkdir()
    from omnireid.config import setup_cfg

    config.write_text(setup_cfg(ca, ["OUTPUT_DIR", str(config.parent)]).dump())  # a training run's folder
    code, _, err = _run(capsys, "ensemble", "--models", f"{config}:{wa}", "--no-members", "--no-flip")
    assert code == 0, err
    assert (config.parent / "ensemble" / "ensemble_results.json").is_file()
    assert not (config.parent / "ensemble_results.json").exists()
