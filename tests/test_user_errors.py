"""Every bad input a user can make is one line from the real CLI, exit code 2, no traceback.

Each case runs ``python -m omnireid ...`` in its own process (loader workers included), as a user
would. The selected cases run two at a time from one fixture (each process mostly imports torch).
A real bug, in contrast, keeps its traceback and exit code 1.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """``make(workdir, synthetic_root) -> argv`` after ``omnireid``; the error line must contain ``expect``."""

    make: Callable[[Path, str], list[str]]
    expect: tuple[str, ...]
    needs_mount: bool = False


def tiny(root: str, out: Path, *extra: str) -> list[str]:
    """Overrides for a tiny ResNet-18 run on ``root`` (the synthetic Market-1501 layout)."""
    return ["DATASETS.ROOT", root, "OUTPUT_DIR", str(out), "MODEL.BACKBONE.DEPTH", "18x",
            "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu",
            "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.IMS_PER_BATCH", "8",
            "DATALOADER.NUM_INSTANCE", "2", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "2",
            "TEST.EVAL_PERIOD", "0", "TEST.IMS_PER_BATCH", "16", *extra]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def evil_checkpoint(path: Path) -> Path:
    """A checkpoint whose unpickling would run a shell command (never, with weights_only=True)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Exploit()}, str(path), pickle_module=pickle)
    return path


def copy_dataset(root: str, work: Path) -> Path:
    target = work / "data"
    shutil.copytree(root, target)
    return target


def spoil(root: Path, folder: str, content: bytes | str) -> Path:
    """Replace images of ``folder`` with bad bytes: every training image (so the first batch meets one),
    or the first query / gallery image the protocol uses (junk ``-1_*`` boxes are dropped by the loader)."""
    images = [p for p in sorted((root / "Market-1501-v15.09.15" / folder).glob("*.jpg")) if not p.name.startswith("-1")]
    for path in images if folder == "bounding_box_train" else images[:1]:
        path.write_bytes(path.read_bytes()[:200] if content == "truncated" else content)
    return images[0]


def eval_only(root, work, *extra):
    return ["train", "--eval-only", *tiny(str(root), work / "out", *extra)]


def train(root, work, *extra):
    return ["train", *tiny(str(root), work / "out", *extra)]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _resume_evil(work: Path, root: str) -> list[str]:
    out = work / "out"
    evil_checkpoint(out / "model_0000001.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    return ["train", "--resume", *tiny(root, out)]


def _convert_evil(work: Path, root: str) -> list[str]:
    config = write(work / "fastreid.yml", "MODEL:\n  BACKBONE:\n    DEPTH: 18x\n    FEAT_DIM: 512\n")
    return ["convert-fastreid", "--config-file", str(config), "--weights", str(evil_checkpoint(work / "w.pth")),
            "--output", str(work / "conv")]


def _readonly_output(work: Path, root: str) -> list[str]:
    folder = work / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True,
                   capture_output=True)
    return train(root, work, "OUTPUT_DIR", str(folder / "run"))


def _mismatched_extract(work: Path, root: str) -> list[str]:
    """A ResNet-34 checkpoint given to extract with a ResNet-18 config."""
    from omnireid.engine import setup_cfg
    from omnireid.modeling import build_model

    r18 = tiny(root, work / "out", "MODEL.HEADS.NUM_CLASSES", "4")
    model = build_model(setup_cfg(None, [*r18, "MODEL.BACKBONE.DEPTH", "34x"]))
    torch.save({"model": model.state_dict()}, str(work / "r34.pth"))
    config = write(work / "r18.yml", setup_cfg(None, r18).dump())
    images = work / "images"
    images.mkdir()
    Image.new("RGB", (32, 64), (1, 2, 3)).save(images / "a.jpg")
    return ["extract", "--config-file", str(config), "--artifact", str(work / "r34.pth"), "--images", str(images),
            "--output", str(work / "f.npz")]


CASES: dict[str, Case] = {
    # configuration files and values
    "unknown key": Case(lambda w, r: train(r, w, "SOLVER.MAX_EPOCHS", "3"),
                        ("unknown config key 'SOLVER.MAX_EPOCHS'", "Did you mean SOLVER.MAX_EPOCH?")),
    "wrong value type": Case(lambda w, r: train(r, w, "SOLVER.MAX_EPOCH", "ten"),
                             ("SOLVER.MAX_EPOCH expects an int, got 'ten'",)),
    "odd overrides": Case(lambda w, r: train(r, w, "SOLVER.MAX_EPOCH"), ("KEY VALUE pairs",)),
    "missing config file": Case(lambda w, r: ["train", "--config-file", str(w / "nope.yml")],
                                ("config file not found", "nope.yml")),
    "invalid yaml": Case(lambda w, r: ["train", "--config-file", str(write(w / "bad.yml", "MODEL: [unclosed\n"))],
                         ("bad.yml: invalid YAML",)),
    "unknown dataset": Case(lambda w, r: train(r, w, "DATASETS.NAMES", "['Market']"),
                            ("Unknown dataset 'Market'", "Did you mean 'Market1501'?", "DukeMTMC")),
    "unknown test dataset": Case(lambda w, r: eval_only(r, w, "DATASETS.TESTS", "['market1501']"),
                                 ("Unknown dataset 'market1501'", "Did you mean 'Market1501'?")),
    "unknown backbone": Case(lambda w, r: train(r, w, "MODEL.BACKBONE.NAME", "build_resnet_backbon"),
                             ("MODEL.BACKBONE.NAME", "Unknown backbone 'build_resnet_backbon'",
                              "Did you mean 'build_resnet_backbone'?")),
    "unknown loss": Case(lambda w, r: train(r, w, "MODEL.LOSSES.NAME", "['TripletLos']"),
                         ("MODEL.LOSSES.NAME", "TripletLos", "Did you mean 'TripletLoss'?")),
    "bad resnet depth": Case(lambda w, r: train(r, w, "MODEL.BACKBONE.DEPTH", "19x"),
                             ("MODEL.BACKBONE.DEPTH '19x'", "18x", "34x", "50x", "101x")),
    "dataset not found": Case(lambda w, r: train(str(w / "nowhere"), w),
                              ("Market1501: dataset not found", "nowhere", "bounding_box_train")),
    # checkpoints: never unpickled unsafely, refused in one line on every path
    "unsafe MODEL.WEIGHTS": Case(lambda w, r: eval_only(r, w, "MODEL.WEIGHTS", str(evil_checkpoint(w / "e.pth"))),
                                 ("e.pth safely (weights_only=True)", "posix.system")),
    "unsafe MODEL.WEIGHTS (train)": Case(lambda w, r: train(r, w, "MODEL.WEIGHTS", str(evil_checkpoint(w / "e.pth"))),
                                         ("e.pth safely (weights_only=True)",)),
    "unsafe --resume": Case(_resume_evil, ("model_0000001.pth safely (weights_only=True)",)),
    "unsafe convert-fastreid": Case(_convert_evil, ("w.pth", "posix.system")),
    "zero-byte MODEL.WEIGHTS": Case(lambda w, r: eval_only(r, w, "MODEL.WEIGHTS", str(write(w / "z.pth", ""))),
                                    ("z.pth safely", "empty or truncated file")),
    "missing MODEL.WEIGHTS": Case(lambda w, r: eval_only(r, w, "MODEL.WEIGHTS", str(w / "gone.pth")),
                                  ("checkpoint not found", "gone.pth")),
    "checkpoint of another architecture": Case(_mismatched_extract,
                                               ("r34.pth",)),
    # output folder
    "OUTPUT_DIR below a file": Case(lambda w, r: train(r, w, "OUTPUT_DIR", str(write(w / "file", "x") / "run")),
                                    ("OUTPUT_DIR", "is not a writable folder", "Not a directory")),
    "read-only OUTPUT_DIR": Case(_readonly_output, ("OUTPUT_DIR", "Read-only file system"), needs_mount=True),
    # bad images, read by loader workers
    "zero-byte train image (2 workers)": Case(
        lambda w, r: train(spoil(copy_dataset(r, w), "bounding_box_train", b"").parents[2], w,
                           "DATALOADER.NUM_WORKERS", "2"), ("cannot read image", ".jpg", "SKIP_CORRUPT")),
    "truncated gallery image (2 workers)": Case(
        lambda w, r: eval_only(spoil(copy_dataset(r, w), "bounding_box_test", "truncated").parents[2], w,
                               "DATALOADER.NUM_WORKERS", "2"), ("cannot read image", "bounding_box_test")),
    "text file as a query image (2 workers)": Case(
        lambda w, r: eval_only(spoil(copy_dataset(r, w), "query", b"hello").parents[2], w,
                               "DATALOADER.NUM_WORKERS", "2"), ("cannot read image", "query")),
    "image listed but missing (2 workers)": Case(
        lambda w, r: eval_only(r, w, "DATASETS.NAMES", "['CustomCSV']", "DATASETS.TESTS", "['CustomCSV']",
                               "DATALOADER.NUM_WORKERS", "2",
                               "DATASETS.CSV.QUERY", str(write(w / "q.csv", "gone.jpg,1,0\n")),
                               "DATASETS.CSV.GALLERY", str(write(w / "g.csv", "gone2.jpg,1,1\n"))),
        ("cannot read image", "gone.jpg")),
    "malformed CSV row": Case(
        lambda w, r: eval_only(r, w, "DATASETS.TESTS", "['CustomCSV']",
                               "DATASETS.CSV.QUERY", str(write(w / "q.csv", "a.jpg,one,0\n")),
                               "DATASETS.CSV.GALLERY", str(write(w / "g.csv", "b.jpg,1,1\n"))),
        ("q.csv, line 1", "pid must be an integer, got 'one'")),
    # training and evaluation data/values
    "NaN loss": Case(lambda w, r: train(r, w, "SOLVER.BASE_LR", "1e30", "SOLVER.MAX_ITER", "4",
                                        "SOLVER.WARMUP_ITERS", "0"), ("Loss became non-finite at iteration",)),
    "TEST.IMS_PER_BATCH -1": Case(lambda w, r: eval_only(r, w, "TEST.IMS_PER_BATCH", "-1"),
                                  ("TEST.IMS_PER_BATCH must be >= 1", "-1")),
    "DATALOADER.NUM_WORKERS -1": Case(lambda w, r: train(r, w, "DATALOADER.NUM_WORKERS", "-1"),
                                      ("DATALOADER.NUM_WORKERS must be >= 0", "-1")),
    "single training identity": Case(
        lambda w, r: train(r, w, "DATASETS.NAMES", "['CustomCSV']", "DATALOADER.SAMPLER_TRAIN", "TrainingSampler",
                           "DATASETS.CSV.TRAIN", str(write(w / "t.csv", "a.jpg,7,0\nb.jpg,7,1\n"))),
        ("single identity", "'7'", "at least 2")),
    "no query has a match": Case(
        lambda w, r: eval_only(r, w, "DATASETS.TESTS", "['CustomCSV']",
                               "DATASETS.CSV.QUERY", str(write(w / "q.csv", "a.jpg,1,0\n")),
                               "DATASETS.CSV.GALLERY", str(write(w / "g.csv", "b.jpg,2,1\nc.jpg,1,0\n"))),
        ("CustomCSV: none of the 1 queries has a true match",)),
    # other commands
    "export: unknown format": Case(lambda w, r: ["export", "--format", "onnxx", "--output", str(w / "x"),
                                                 "--config-file", str(write(w / "c.yml", "SEED: 1\n"))],
                                   ("--format: Unknown export format 'onnxx'", "Did you mean 'onnx'?")),
    "extract: missing artifact": Case(lambda w, r: ["extract", "--artifact", "m.onnx", "--images", str(w / "none"),
                                                    "--output", str(w / "f.npz")], ("artifact not found: m.onnx",)),
    "data synth: one camera": Case(lambda w, r: ["data", "synth", "--out", str(w / "s"), "--cameras", "1"],
                                   ("omnireid data synth: error:", "num_cameras must be between 2 and 9")),
    "index info: no index": Case(lambda w, r: ["index", "info", "--index", str(w / "none")],
                                 ("omnireid index info: error:",)),
    "ensemble: missing model file": Case(lambda w, r: ["ensemble", "--models", f"{w}/a.yml:{w}/a.pth", "b.onnx"],
                                         ("omnireid ensemble: error:", "file not found", "a.yml")),
    "submit: --topk 0": Case(lambda w, r: ["submit", "--models", "m.onnx", "--output", str(w / "s.json"),
                                           "--topk", "0"], ("omnireid submit: error:", "--topk must be >= 1")),
    "demo: missing config": Case(lambda w, r: ["demo", "--config-file", str(w / "none.yml"),
                                               "--data-dir", str(w / "d")], ("demo config not found",)),
}
if not torch.cuda.is_available():
    CASES["MODEL.DEVICE cuda without CUDA"] = Case(lambda w, r: train(r, w, "MODEL.DEVICE", "cuda"),
                                                   ("MODEL.DEVICE is 'cuda' but CUDA is not available",
                                                    "auto", "cpu"))


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMNIREID_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "omnireid", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def results(request, synthetic_root, tmp_path_factory):
    """Run every selected case (two processes at a time): name -> CompletedProcess, or a skip reason."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "name" in item.callspec.params]
    jobs, out, mounts = {}, {}, []
    for name in selected:
        work = tmp_path_factory.mktemp("case")
        try:
            argv = CASES[name].make(work, synthetic_root)
        except subprocess.CalledProcessError as exc:
            out[name] = f"cannot mount a tmpfs here ({exc.stderr.decode().strip()})"
            continue
        if CASES[name].needs_mount:
            mounts.append(work / "ro")
        jobs[name] = (argv, work)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_run, argv, work) for name, (argv, work) in jobs.items()}
            out.update({name: (future.result(), jobs[name][1]) for name, future in futures.items()})
    finally:
        for folder in mounts:
            subprocess.run(["umount", str(folder)], capture_output=True)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_line_exit_2(results, name):
    result = results[name]
    if isinstance(result, str):
        pytest.skip(result)
    result, work = result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-4000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-4000:]
    assert len(lines) == 1, result.stderr[-4000:]
    assert re.match(r"omnireid [\w-]+( [\w-]+)?: error: \S", lines[0]), lines[0]  # nested: "index build"
    for text in CASES[name].expect:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert not (work / "pwned.txt").exists()  # the unsafe checkpoints were never unpickled


BUG_SCRIPT = """
import sys
from omnireid.cli.main import COMMAND_REGISTRY, main
{prelude}

def run(args):
    {body}

@COMMAND_REGISTRY.register("buggy")
def add(sub):
    sub.add_parser("buggy").set_defaults(func=run)

sys.exit(main(["buggy"]))
"""

WORKER_BUG = """
    import torch
    from torch.utils.data import DataLoader, Dataset
    class Data(Dataset):
        def __len__(self): return 4
        def __getitem__(self, i): {raise_}
    list(DataLoader(Data(), num_workers=1))
"""


def _run_script(body: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    script = BUG_SCRIPT.replace("{body}", textwrap.indent(textwrap.dedent(body), "    ").strip())
    script = script.replace("{prelude}", textwrap.dedent(prelude))
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


TWO_ARGUMENT_ERROR = """
    from omnireid.utils.errors import DatasetError
    class TwoArguments(DatasetError):  # PyTorch cannot rebuild it from the worker's text
        def __init__(self, path, why):
            super().__init__(f"{path}: {why}")
"""


@pytest.mark.parametrize("raise_, returncode, expect", [
    # a bug in the main process or in a loader worker keeps its traceback
    ("main", 1, "ZeroDivisionError: division by zero"),
    ("raise ValueError('a bug')", 1, "ValueError: Caught ValueError in DataLoader worker process 0"),
    # a user error in a worker is unwrapped, even when PyTorch cannot rebuild it in its own type
    ("raise __import__('omnireid.data', fromlist=['x']).CorruptImageError('cannot read image x.jpg: bad')", 2,
     "omnireid buggy: error: cannot read image x.jpg: bad\n"),
    ("raise TwoArguments('x.jpg', 'too dark')", 2, "omnireid buggy: error: x.jpg: too dark\n"),
])
def test_bugs_keep_their_traceback_and_worker_user_errors_are_unwrapped(tmp_path, raise_, returncode, expect):
    body = "1 / 0" if raise_ == "main" else WORKER_BUG.replace("{raise_}", raise_)
    result = _run_script(body, tmp_path, prelude=TWO_ARGUMENT_ERROR)
    assert result.returncode == returncode, result.stderr[-3000:]
    assert expect in result.stderr, result.stderr[-3000:]
    if returncode == 2:
        assert result.stderr == expect, result.stderr
    else:
        assert "Traceback (most recent call last)" in result.stderr


def test_unwrapping_a_worker_message_keeps_every_line():
    from omnireid.data import DatasetLayoutError
    from omnireid.utils.errors import as_user_error, one_line

    def raised_in_worker(exc: BaseException) -> BaseException:
        try:
            raise exc
        except BaseException:
            from torch._utils import ExceptionWrapper

            wrapper = ExceptionWrapper(where="in DataLoader worker process 3")
        try:
            wrapper.reraise()
        except BaseException as reraised:
            return reraised

    error = raised_in_worker(DatasetLayoutError("Market1501: missing /d/query. Official layout:\n  a/\n    b.jpg"))
    assert isinstance(error, DatasetLayoutError)
    assert str(error) == "Market1501: missing /d/query. Official layout:\n  a/\n    b.jpg"
    assert one_line(str(as_user_error(error))) == "Market1501: missing /d/query. Official layout: a/; b.jpg"
    assert as_user_error(raised_in_worker(KeyError("bug"))) is None
