"""Atomic writes and safe loading."""
import os
import pickle

import pytest
import torch

from omnireid.utils import file_io


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pth")
    file_io.atomic_torch_save({"w": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        file_io.atomic_torch_save({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(file_io.load_checkpoint_file(path)["w"], torch.ones(2))
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_runs_pickled_code(tmp_path):
    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as f:
        torch.save({"model": Exploit()}, f, pickle_module=pickle)
    with pytest.raises(RuntimeError, match="weights_only"):
        file_io.load_checkpoint_file(path)


def test_missing_and_truncated_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        file_io.load_checkpoint_file(str(tmp_path / "nope.pth"))
    path = tmp_path / "cut.pth"
    file_io.atomic_torch_save({"w": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RuntimeError, match="cut.pth"):
        file_io.load_checkpoint_file(str(path))
