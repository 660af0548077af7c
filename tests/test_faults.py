"""Faults lose nothing: a full disk while checkpointing, ``kill -9`` at a random moment, a DDP rank
killed mid-run.

The disk-full cases mount a small tmpfs (they need root and mount permission; they skip cleanly
otherwise). The process-killing cases run real ``omnireid train`` / ``torchrun`` processes and are
``slow`` (``make test-slow``).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from omnireid.engine.checkpoint import Checkpointer
from omnireid.utils.errors import OutputError
from omnireid.utils.file_io import load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size_bytes) -> folder``: a tmpfs of that size, unmounted at the end (skip if not allowed)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def _state_bytes(model: nn.Module, optimizer) -> int:
    """Bytes of ``{"model", "optimizer"}`` once the optimizer has its per-parameter state (momentum...).

    Takes one optimizer step with zero gradients (weights move only through weight decay).
    """
    import io

    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    return buffer.tell()


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(small_disk):
    torch.manual_seed(0)
    model = nn.Linear(256, 1024)  # ~1 MB of weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    size = _state_bytes(model, optimizer)
    disk = small_disk(int(size * 1.6) // 4096 * 4096)  # one checkpoint fits, two do not
    checkpointer = Checkpointer(model, str(disk), optimizer=optimizer)
    first = checkpointer.save("model_0000001", iteration=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    with pytest.raises(OutputError, match=r"model_0000002\.pth: No space left on device"):
        checkpointer.save("model_0000002", iteration=2)
    assert checkpointer.last_checkpoint() == first  # last_checkpoint still names the complete file
    loaded = load_checkpoint_file(first)
    assert loaded["iteration"] == 1
    for key, value in saved.items():
        assert torch.equal(loaded["model"][key], value)
    assert sorted(os.listdir(disk)) == ["last_checkpoint", "model_0000001.pth"]  # no partial file left

    # overwriting the same name on a full disk (model_final twice): the old file survives whole
    with pytest.raises(OutputError, match="the previous file is unchanged"):
        checkpointer.save("model_0000001", iteration=5)
    assert load_checkpoint_file(first)["iteration"] == 1


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMNIREID_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def _write_config(make_tiny_cfg, synthetic_root: str, out: Path, *opts: str) -> str:
    cfg = make_tiny_cfg(synthetic_root, str(out), *opts)
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(cfg.dump())
    return str(path)


@pytest.mark.slow
def test_disk_full_in_a_real_run_is_one_line_and_keeps_the_last_checkpoint(small_disk, synthetic_root, tmp_path,
                                                                         make_tiny_cfg):
    from omnireid.modeling import build_model
    from omnireid.solver import build_optimizer

    opts = ["TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "0"]
    cfg = make_tiny_cfg(synthetic_root, str(tmp_path / "probe"), *opts)
    cfg.MODEL.HEADS.NUM_CLASSES = 12
    model = build_model(cfg)
    size = _state_bytes(model, build_optimizer(cfg, model))
    disk = small_disk(int(size * 1.5) // 4096 * 4096 + (1 << 20))
    config = _write_config(make_tiny_cfg, synthetic_root, tmp_path / "run", *opts, "OUTPUT_DIR", str(disk / "run"))
    # the first epoch's checkpoint fits, the second's does not: one line, exit 2, the first one intact
    result = subprocess.run([sys.executable, "-m", "omnireid", "train", "--config-file", config,
                             "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.MAX_EPOCH", "3", "SOLVER.MAX_ITER", "0"],
                            env=_env(), capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "No space left on device" in lines[0], result.stderr[-3000:]
    last = Checkpointer(nn.Module(), str(disk / "run")).last_checkpoint()
    assert last is not None and load_checkpoint_file(last)["iteration"] > 0


# kill -9 at a random moment, then --resume ----------------------------------------------------------
def _final_weights(out: Path) -> dict:
    return load_checkpoint_file(str(out / "model_final.pth"))["model"]


@pytest.mark.slow
def test_kill_9_at_a_random_moment_then_resume_is_bit_identical(synthetic_root, tmp_path, make_tiny_cfg):
    opts = ["TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "2", "SOLVER.MAX_EPOCH", "6"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-m", "omnireid", "train", "--config-file",
                    _write_config(make_tiny_cfg, synthetic_root, full, *opts)],
                   env=_env(), check=True, capture_output=True, timeout=1800)

    run = tmp_path / "killed"
    config = _write_config(make_tiny_cfg, synthetic_root, run, *opts)
    seed = int.from_bytes(os.urandom(4), "little")
    delay = random.Random(seed).uniform(0.0, 4.0)
    print(f"kill -9 {delay:.2f} s after the first checkpoint (seed {seed})")
    process = subprocess.Popen([sys.executable, "-m", "omnireid", "train", "--config-file", config], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 900
    while not (run / "last_checkpoint").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    if process.poll() is not None:
        pytest.fail(f"the run finished before the kill (exit {process.returncode}); lower the delay")
    os.killpg(process.pid, signal.SIGKILL)  # the trainer and its loader workers, mid-whatever
    process.wait()
    reached = (run / "last_checkpoint").read_text().strip()
    print(f"killed after {reached}; {sorted(p.name for p in run.iterdir())}")
    assert not (run / "model_final.pth").exists()

    subprocess.run([sys.executable, "-m", "omnireid", "train", "--resume", "--config-file", config],
                   env=_env(), check=True, capture_output=True, timeout=1800)
    a, b = _final_weights(full), _final_weights(run)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill -9 at {reached} + resume"


# a DDP rank killed mid-run ----------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    return None


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_ddp_rank_ends_the_whole_job_quickly(victim, synthetic_root, tmp_path, make_tiny_cfg):
    out = tmp_path / "ddp"
    config = _write_config(make_tiny_cfg, synthetic_root, out, "TEST.EVAL_PERIOD", "0", "SOLVER.MAX_EPOCH", "200",
                           "MODEL.BACKBONE.NORM", "GN", "MODEL.HEADS.WITH_BNNECK", "False")
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "-m", "omnireid", "train", "--config-file", config], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not (out / "last_checkpoint").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.stderr.read()[-3000:]
        workers = {_rank_of(pid): pid for pid in _children(process.pid)}
        assert set(workers) >= {0, 1}, workers
        os.kill(workers[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            process.wait(timeout=60)  # the hang this guards against would last the 30-minute gloo timeout
        except subprocess.TimeoutExpired:
            pytest.fail("the job did not end within 60 s of a rank being killed")
        print(f"torchrun exited {process.returncode} {time.monotonic() - killed_at:.1f} s after rank {victim} died")
        assert process.returncode != 0
        for pid in workers.values():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    last = Checkpointer(nn.Module(), str(out)).last_checkpoint()
    assert last is not None
    for checkpoint in out.glob("model_*.pth"):  # every surviving checkpoint is complete
        assert "model" in load_checkpoint_file(str(checkpoint))
