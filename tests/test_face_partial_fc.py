"""Partial FC: equals the full margin-softmax head at sample rate 1, samples correctly below it, and gives
the same loss, gradients and training in 2 processes (gloo) as in 1, resuming on another process count."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from omnireid.modeling.heads.embedding_head import EmbeddingHead
from omnireid.modeling.losses.cross_entropy import CrossEntropyLoss
from omnireid.tasks.face.partial_fc import PartialFCHead, PartialFCLoss, sample_centres, sharded_cross_entropy
from omnireid.utils.sharding import shard_range

WORKER = os.path.join(os.path.dirname(__file__), "face_partial_fc_worker.py")


def _inputs(n=10, d=6, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, 1, 1, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("cls_layer", ["ArcSoftmax", "CosSoftmax"])
def test_rate_one_equals_the_full_softmax_head(cls_layer):
    x, t = _inputs()
    pfc = PartialFCHead(in_channels=6, num_classes=7, cls_layer=cls_layer, scale=16.0, margin=0.35,
                        sample_rate=1.0).double().train()
    full = EmbeddingHead(in_channels=6, num_classes=7, pool_layer="Identity", cls_layer=cls_layer, scale=16.0,
                         margin=0.35).double().train()
    with torch.no_grad():
        full.classifier.weight.copy_(pfc.classifier.weight)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_pfc, out_full = pfc.compute_outputs(xa, t), full.compute_outputs(xb, t)
    loss_pfc = PartialFCLoss()(out_pfc, t)
    loss_full = CrossEntropyLoss()(out_full, t)
    torch.testing.assert_close(loss_pfc, loss_full)
    torch.testing.assert_close(out_pfc["pred_class_logits"], out_full["pred_class_logits"])
    loss_pfc.backward()
    loss_full.backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(pfc.classifier.weight.grad, full.classifier.weight.grad)


def test_sharded_cross_entropy_is_cross_entropy_in_one_process():
    logits = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 8, 3, 3, 1])
    loss = sharded_cross_entropy(logits, targets)
    reference = F.cross_entropy(logits, targets)
    torch.testing.assert_close(loss, reference)
    (g1,) = torch.autograd.grad(loss, logits)
    (g2,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(g1, g2)


def test_sampling_keeps_every_positive_and_the_rate():
    torch.manual_seed(0)
    positives = torch.tensor([3, 17, 40, 41])
    index = sample_centres(positives, 100, 0.1)
    assert index.numel() == 10 and torch.equal(index, index.sort().values) and len(set(index.tolist())) == 10
    assert set(positives.tolist()) <= set(index.tolist())
    many = torch.arange(0, 100, 5)  # 20 positives > 10% of 100: all kept, nothing else
    assert torch.equal(sample_centres(many, 100, 0.1), many)


def test_sampled_loss_is_cross_entropy_over_the_sampled_classes():
    torch.manual_seed(3)
    x, t = _inputs(n=12, classes=40, seed=1)
    head = PartialFCHead(in_channels=6, num_classes=40, cls_layer="ArcSoftmax", scale=8.0, margin=0.2,
                         sample_rate=0.25).double().train()
    out = head.compute_outputs(x, t)
    assert out["cls_outputs"].shape == (12, 10) and "pred_class_logits" not in out
    loss = PartialFCLoss()(out, t)
    # brute force: recover the sampled classes from the logits (cosine to each centre, then margin at the target)
    cos = F.normalize(x.flatten(1), dim=1) @ F.normalize(head.classifier.weight, dim=1).t()
    columns = [[int(torch.isclose(cos[i], out["cls_outputs"][i, j] / 8.0).nonzero()[0]) if j != out["cls_targets"][i]
                else int(t[i]) for j in range(10)] for i in range(12)]
    sampled = columns[0]
    assert all(c == sampled for c in columns) and set(t.tolist()) <= set(sampled)
    assert [sampled[int(c)] for c in out["cls_targets"]] == t.tolist()
    theta = torch.acos(cos.gather(1, t[:, None]).clamp(-1, 1))
    logits = cos[:, sampled].clone()
    logits[torch.arange(12), out["cls_targets"]] = torch.cos(theta + 0.2).squeeze(1)
    torch.testing.assert_close(loss, F.cross_entropy(8.0 * logits, out["cls_targets"]))


def test_shard_ranges_cover_the_classes():
    for total, world in ((11, 2), (11, 3), (4, 4), (100, 7)):
        ranges = [shard_range(total, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1


def test_more_processes_than_classes_is_a_clear_error(monkeypatch):
    from omnireid.utils import comm

    monkeypatch.setattr(comm, "get_world_size", lambda: 4)
    with pytest.raises(ValueError, match="splits 3 classes over 4 processes"):
        PartialFCHead(in_channels=4, num_classes=3)


def _run(nproc: int, out: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", WORKER, out,
           *args] if nproc > 1 else [sys.executable, WORKER, out, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_processes_equal_one_and_resume_on_another_process_count(tmp_path):
    out = str(tmp_path)
    _run(1, out, "--tag", "one", "--save-at", "2")
    _run(2, out, "--tag", "two", "--save-at", "2")
    # resume the 1-process checkpoint with 2 processes and the 2-process one with 1 process
    _run(2, out, "--tag", "one_to_two", "--resume", os.path.join(out, "one_at2.pth"))
    _run(1, out, "--tag", "two_to_one", "--resume", os.path.join(out, "two_at2.pth"))
    one, two = torch.load(tmp_path / "one_w1.pt"), torch.load(tmp_path / "two_w2.pt")
    tol = dict(rtol=1e-4, atol=1e-5)  # the engine's DDP test tolerance
    torch.testing.assert_close(two["loss"], one["loss"], **tol)
    torch.testing.assert_close(two["weight_grad"], one["weight_grad"], **tol)
    torch.testing.assert_close(two["backbone_grad"], one["backbone_grad"], **tol)  # DDP-averaged, rescaled
    torch.testing.assert_close(two["embedding_grad"] / 2, one["embedding_grad"], **tol)  # x world before DDP's mean
    torch.testing.assert_close(two["weight"], one["weight"], **tol)
    torch.testing.assert_close(two["backbone"], one["backbone"], **tol)
    checkpoint = torch.load(tmp_path / "two_at2.pth", weights_only=True)
    assert checkpoint["model"]["heads.classifier.weight"].shape == (11, 8)  # gathered: every centre
    for tag, world in (("one_to_two", 2), ("two_to_one", 1)):
        resumed = torch.load(tmp_path / f"{tag}_w{world}.pt")
        torch.testing.assert_close(resumed["weight"], one["weight"], **tol)
        torch.testing.assert_close(resumed["backbone"], one["backbone"], **tol)


def test_loss_without_sharded_targets_is_plain_cross_entropy():
    logits = torch.randn(6, 5, requires_grad=True)
    targets = torch.tensor([0, 4, 2, 2, 1, 3])
    torch.testing.assert_close(PartialFCLoss()({"cls_outputs": logits}, targets), F.cross_entropy(logits, targets))
