"""Shared fixtures: a small synthetic reID dataset generated once per test session."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("OMNIREID_PROGRESS", "0")  # no progress bars in test logs


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """A tiny synthetic Market-1501-layout dataset: 12 training and 6 test identities, 3 cameras."""
    from omnireid.data.synthetic import write_synthetic_reid

    root = tmp_path_factory.mktemp("datasets")
    write_synthetic_reid(str(root / "Market-1501-v15.09.15"), seed=0, num_train_ids=12, num_test_ids=6,
                         num_cameras=3)
    return str(root)


def tiny_reid_cfg(root: str, output_dir: str, *opts: str):
    """ResNet-18 at 64x32 on the tiny synthetic set: a full pipeline in a few seconds."""
    from omnireid.engine import setup_cfg

    return setup_cfg(None, [
        "DATASETS.ROOT", root, "DATASETS.NAMES", "Market1501", "DATASETS.TESTS", "Market1501",
        "OUTPUT_DIR", output_dir, "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu",
        "MODEL.HEADS.WITH_BNNECK", "True", "MODEL.LOSSES.NAME", "['CrossEntropyLoss', 'TripletLoss']",
        "MODEL.LOSSES.CE.EPSILON", "0.1",
        "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.FLIP.ENABLED", "True", "INPUT.REA.ENABLED", "True", "INPUT.PADDING.ENABLED", "True",
        "INPUT.PADDING.SIZE", "4",
        "DATALOADER.NUM_INSTANCE", "4", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "16", "SOLVER.OPT", "SGD", "SOLVER.BASE_LR", "0.01",
        "SOLVER.MAX_EPOCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.WARMUP_ITERS", "2",
        "TEST.EVAL_PERIOD", "2", "TEST.IMS_PER_BATCH", "32", "SEED", "7", *opts,
    ])


@pytest.fixture
def make_tiny_cfg():
    """``make_tiny_cfg(root, output_dir, *KEY_VALUE_overrides)`` -> the config of :func:`tiny_reid_cfg`."""
    return tiny_reid_cfg


@pytest.fixture(scope="session")
def serve_assets(tmp_path_factory) -> dict:
    """A tiny ONNX embedder (like `omnireid export` writes) and 24 gallery + 6 extra images, made once."""
    from serve_helpers import make_tiny_onnx, write_images

    root = tmp_path_factory.mktemp("serve_assets")
    return {"artifact": make_tiny_onnx(str(root / "model.onnx")),
            "gallery": write_images(str(root / "gallery"), 24, seed=0),
            "extra": write_images(str(root / "extra"), 6, seed=1, prefix="new"),
            "root": str(root)}


def pytest_terminal_summary(terminalreporter):
    """Say loudly when the FastReID-equivalence tests did not run (FastReID 1.4.0 not installed)."""
    import sys

    reference = sys.modules.get("fastreid_reference")
    skipped = getattr(reference, "SKIPPED_MODULES", [])
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} FastReID-equivalence test modules were SKIPPED", red=True)
        terminalreporter.write_line(f"({', '.join(sorted(set(skipped)))}): {reference.INSTALL_HINT}")


