"""Losses against independent, loop-based references of their formulas (float64, plain Python)."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from omnireid.config import get_cfg
from omnireid.modeling.losses import (
    LOSS_REGISTRY,
    CircleLoss,
    Cosface,
    CrossEntropyLoss,
    FocalLoss,
    TripletLoss,
    build_losses,
    cross_entropy_loss,
    focal_loss,
    pairwise_circle_loss,
    pairwise_cosface_loss,
    required_outputs,
    triplet_loss,
)
import omnireid.tasks  # noqa: F401  every built-in task's losses: the parameter list does not depend on test order


def _softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(v - top) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture
def logits_and_targets():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g, dtype=torch.float64) * 3, torch.tensor([0, 4, 2, 2, 1, 3])


@pytest.fixture
def embeddings():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 4, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])


# ---------------------------------------------------------------------------------------------- CE
def _ce_reference(logits, targets, epsilon, alpha=0.2):
    losses = []
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = _softmax_row(row)
        c = len(row)
        eps = epsilon if epsilon >= 0 else alpha * p[y]
        q = [(1 - eps) if k == y else eps / (c - 1) for k in range(c)]
        losses.append(-sum(qk * math.log(pk) for qk, pk in zip(q, p)))
    nonzero = max(sum(1 for v in losses if v != 0), 1)
    return sum(losses) / nonzero


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3, -1.0])
def test_cross_entropy_matches_formula(logits_and_targets, epsilon):
    logits, targets = logits_and_targets
    got = cross_entropy_loss(logits, targets, epsilon=epsilon, alpha=0.2).item()
    assert got == pytest.approx(_ce_reference(logits, targets, epsilon, 0.2), rel=1e-6)


def test_cross_entropy_without_smoothing_is_torch_cross_entropy(logits_and_targets):
    logits, targets = logits_and_targets
    assert cross_entropy_loss(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_cross_entropy_hand_computed_two_classes():
    # logits (0, 0): p = (0.5, 0.5); eps = 0.2 -> q = (0.8, 0.2) for target 0: loss = log 2
    assert cross_entropy_loss(torch.zeros(1, 2), torch.tensor([0]), epsilon=0.2).item() == pytest.approx(math.log(2))


def test_cross_entropy_averages_over_samples_with_nonzero_loss():
    # FastReID divides by the number of non-zero per-sample losses: [0, log 2] -> log 2, not log 2 / 2.
    logits = torch.tensor([[100.0, -100.0], [0.0, 0.0]])
    assert cross_entropy_loss(logits, torch.tensor([0, 0])).item() == pytest.approx(math.log(2))


def test_cross_entropy_module_scale_and_config(logits_and_targets):
    logits, targets = logits_and_targets
    cfg = get_cfg()
    cfg.MODEL.LOSSES.CE.EPSILON, cfg.MODEL.LOSSES.CE.SCALE = 0.1, 0.5
    loss = CrossEntropyLoss.from_config(cfg)
    assert loss.loss_name == "loss_cls"
    got = loss({"cls_outputs": logits}, targets).item()
    assert got == pytest.approx(0.5 * _ce_reference(logits, targets, 0.1), rel=1e-6)


def test_classification_loss_without_classifier_is_a_clear_error():
    with pytest.raises(KeyError, match="NUM_CLASSES"):
        CrossEntropyLoss()({"features": torch.zeros(2, 3)}, torch.tensor([0, 1]))


# ------------------------------------------------------------------------------------------- focal
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (1.0, 0.0), (0.5, 1.5)])
def test_focal_matches_formula(logits_and_targets, alpha, gamma):
    logits, targets = logits_and_targets
    ref = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        p = _softmax_row(row)[y]
        ref += -alpha * (1 - p) ** gamma * math.log(p)
    ref /= len(targets)
    assert focal_loss(logits, targets, alpha, gamma).item() == pytest.approx(ref, rel=1e-6)
    module = FocalLoss(alpha, gamma, scale=2.0)
    assert module({"cls_outputs": logits}, targets).item() == pytest.approx(2 * ref, rel=1e-6)


# ----------------------------------------------------------------------------------------- triplet
def _triplet_reference(emb, targets, margin, norm_feat, hard_mining):
    x, t = emb.tolist(), targets.tolist()
    n = len(x)
    if norm_feat:
        d = [[2 - 2 * _cos(x[i], x[j]) for j in range(n)] for i in range(n)]
    else:
        d = [[_dist(x[i], x[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [d[i][j] for j in range(n) if t[j] == t[i]]  # includes the anchor itself
        neg = [d[i][j] for j in range(n) if t[j] != t[i]]
        if hard_mining:
            ap, an = max(pos), min(neg)
        else:
            wp = _softmax_row(pos)
            wn = _softmax_row([-v for v in neg])
            ap = sum(w * v for w, v in zip(wp, pos))
            an = sum(w * v for w, v in zip(wn, neg))
        total += max(0.0, ap - an + margin) if margin > 0 else math.log1p(math.exp(ap - an))
    return total / n


@pytest.mark.parametrize("margin", [0.3, 5.0, 0.0])
@pytest.mark.parametrize("norm_feat", [False, True])
@pytest.mark.parametrize("hard_mining", [True, False])
def test_triplet_matches_brute_force(embeddings, margin, norm_feat, hard_mining):
    emb, targets = embeddings
    got = triplet_loss(emb, targets, margin, norm_feat, hard_mining).item()
    ref = _triplet_reference(emb.double(), targets, margin, norm_feat, hard_mining)
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-5)


def test_triplet_hand_computed():
    # 1-D points: ids 0 at {0, 1}, id 1 at {3}. Hard: anchor 0: ap=1, an=3; anchor 1: ap=1, an=2;
    # anchor 2 (alone): ap=0, an=2. margin 1.5 -> [0, 0.5, 0] -> mean 1/6.
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    got = triplet_loss(emb, torch.tensor([0, 0, 1]), margin=1.5, hard_mining=True).item()
    assert got == pytest.approx(0.5 / 3, abs=1e-5)


def test_triplet_module_uses_features_and_scale(embeddings):
    emb, targets = embeddings
    cfg = get_cfg()
    cfg.MODEL.LOSSES.TRI.MARGIN, cfg.MODEL.LOSSES.TRI.SCALE, cfg.MODEL.LOSSES.TRI.HARD_MINING = 0.0, 3.0, False
    loss = TripletLoss.from_config(cfg)
    ref = _triplet_reference(emb, targets, 0.0, False, False)
    assert loss({"features": emb}, targets).item() == pytest.approx(3 * ref, rel=1e-4)
    with pytest.raises(ValueError, match="TRI.MARGIN"):
        TripletLoss(margin=-1)


# ---------------------------------------------------------------------------------- circle / cosface
def _pairwise_reference(emb, targets, pos_term, neg_term):
    x, t = emb.tolist(), targets.tolist()
    n = len(x)
    total = 0.0
    for i in range(n):
        sp = sum(math.exp(pos_term(_cos(x[i], x[j]))) for j in range(n) if j != i and t[j] == t[i])
        sn = sum(math.exp(neg_term(_cos(x[i], x[j]))) for j in range(n) if t[j] != t[i])
        total += math.log1p(sp * sn)
    return total / n


@pytest.mark.parametrize("margin,gamma", [(0.25, 16.0), (0.4, 4.0)])
def test_circle_loss_matches_formula(embeddings, margin, gamma):
    emb, targets = embeddings

    def pos(s):
        return -gamma * max(1 + margin - s, 0.0) * (s - (1 - margin))

    def neg(s):
        return gamma * max(s + margin, 0.0) * (s - margin)

    ref = _pairwise_reference(emb, targets, pos, neg)
    assert pairwise_circle_loss(emb, targets, margin, gamma).item() == pytest.approx(ref, rel=1e-5)
    module = CircleLoss(margin, gamma, scale=0.5)
    assert module({"features": emb}, targets).item() == pytest.approx(0.5 * ref, rel=1e-5)


def test_circle_loss_weights_are_not_differentiated(embeddings):
    emb, targets = embeddings
    margin, gamma = 0.25, 8.0
    x = emb.clone().requires_grad_(True)
    pairwise_circle_loss(x, targets, margin, gamma).backward()
    # Reference: alphas as Python constants (no gradient through them), loops over pairs.
    y = emb.clone().requires_grad_(True)
    z = F.normalize(y, dim=1)
    n, t = len(targets), targets.tolist()
    total = y.new_zeros(())
    for i in range(n):
        sp, sn = y.new_zeros(()), y.new_zeros(())
        for j in range(n):
            s = z[i] @ z[j]
            if j != i and t[j] == t[i]:
                sp = sp + torch.exp(-gamma * max(1 + margin - s.item(), 0.0) * (s - (1 - margin)))
            elif t[j] != t[i]:
                sn = sn + torch.exp(gamma * max(s.item() + margin, 0.0) * (s - margin))
        total = total + torch.log1p(sp * sn)
    (total / n).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("margin,gamma", [(0.25, 16.0), (0.1, 2.0)])
def test_pairwise_cosface_matches_formula(embeddings, margin, gamma):
    emb, targets = embeddings
    ref = _pairwise_reference(emb, targets, lambda s: -gamma * s, lambda s: gamma * (s + margin))
    assert pairwise_cosface_loss(emb, targets, margin, gamma).item() == pytest.approx(ref, rel=1e-5)
    cfg = get_cfg()
    cfg.MODEL.LOSSES.COSFACE.MARGIN, cfg.MODEL.LOSSES.COSFACE.GAMMA = margin, gamma
    module = LOSS_REGISTRY.get("CosFace").from_config(cfg)
    assert isinstance(module, Cosface) and module.loss_name == "loss_cosface"
    assert module({"features": emb}, targets).item() == pytest.approx(ref, rel=1e-5)


def test_pairwise_losses_ignore_anchors_without_positives():
    # Every identity appears once: no positive pairs, so the loss is zero (softplus of ~-1e9).
    emb = torch.randn(4, 3)
    targets = torch.arange(4)
    assert pairwise_circle_loss(emb, targets).item() == pytest.approx(0.0, abs=1e-6)
    assert pairwise_cosface_loss(emb, targets).item() == pytest.approx(0.0, abs=1e-6)


# -------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", LOSS_REGISTRY.names(include_aliases=True))
def test_every_registered_loss_builds_from_config_and_backpropagates(name, embeddings):
    emb, targets = embeddings
    if getattr(LOSS_REGISTRY.get(name), "batch_fields", ()):
        pytest.skip("a task loss reading batch fields; its task's tests exercise it")
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = [name]
    (loss,) = build_losses(cfg)
    assert loss.loss_name.startswith("loss_")
    features = emb.float().requires_grad_(True)
    logits = torch.randn(8, 4, requires_grad=True)
    available = {"features": features, "cls_outputs": logits, "pred_class_logits": logits}
    declared = required_outputs(loss)  # the declaration is the truth: only those outputs are given
    value = loss({key: available[key] for key in declared}, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert (features.grad is not None and features.grad.abs().sum() > 0) or \
           (logits.grad is not None and logits.grad.abs().sum() > 0)


def test_build_losses_errors():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.NAME = ["TripletLos"]
    with pytest.raises(ValueError, match=r"MODEL.LOSSES.NAME.*TripletLoss"):
        build_losses(cfg)
    cfg.MODEL.LOSSES.NAME = ["Cosface", "CosFace"]
    with pytest.raises(ValueError, match="loss_cosface"):
        build_losses(cfg)


# ------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, emb: torch.Tensor, targets: torch.Tensor, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = emb.shape[0] // world_size
        results = []
        for fn in (lambda e, t: triplet_loss(e, t, 0.3, False, True), lambda e, t: triplet_loss(e, t, 0.0, True, False),
                   pairwise_circle_loss, pairwise_cosface_loss):
            local = emb[rank * n:(rank + 1) * n].clone().requires_grad_(True)
            loss = fn(local, targets[rank * n:(rank + 1) * n])
            loss.backward()
            results.append((loss.detach(), local.grad / world_size))  # DDP averages gradients over ranks
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_pairwise_losses_under_ddp_match_the_global_batch(tmp_path):
    """Two gloo processes, each with half of the batch: the DDP-averaged gradient equals the
    gradient of the loss over the whole batch in one process."""
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(3)
    emb = torch.randn(8, 5, generator=g)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # P x K with K=2: an identity stays on one rank
    mp.spawn(_ddp_worker, args=(2, _free_port(), emb, targets, str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    fns = (lambda e, t: triplet_loss(e, t, 0.3, False, True), lambda e, t: triplet_loss(e, t, 0.0, True, False),
           pairwise_circle_loss, pairwise_cosface_loss)
    for index, fn in enumerate(fns):
        full = emb.clone().requires_grad_(True)
        loss = fn(full, targets)
        loss.backward()
        mean_loss = (out[0][index][0] + out[1][index][0]) / 2
        torch.testing.assert_close(mean_loss, loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.cat([out[0][index][1], out[1][index][1]]), full.grad, rtol=1e-4, atol=1e-6)
