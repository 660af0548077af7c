"""MGN (three branches, eight heads) and MoCo (cross-batch memory queue)."""
from __future__ import annotations

import math

import pytest
import torch
from fastreid_reference import import_fastreid
import torch.nn.functional as F

from omnireid.config.defaults import get_cfg
from omnireid.modeling.losses.triplet import triplet_loss
from omnireid.modeling.meta_arch import build_model
from omnireid.modeling.meta_arch.mgn import EVAL_ORDER, HEAD_NAMES, MGN
from omnireid.modeling.meta_arch.moco import CrossBatchMemory, MoCo


def _cfg(arch: str, depth: str = "18x", **heads):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.BACKBONE.FEAT_DIM = 512 if depth in ("18x", "34x") else 2048
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.LOSSES.NAME = ["CrossEntropyLoss", "TripletLoss"]
    for key, value in heads.items():
        cfg.MODEL.HEADS[key] = value
    return cfg


def _batch(n: int = 8, height: int = 96, width: int = 48):
    torch.manual_seed(1)
    return {"images": torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8),
            "targets": torch.arange(n) % 4, "camids": torch.zeros(n, dtype=torch.long)}


def test_mgn_losses_follow_fastreid_weighting():
    torch.manual_seed(0)
    model = build_model(_cfg("MGN", EMBEDDING_DIM=32, WITH_BNNECK=True))
    assert isinstance(model, MGN)
    batch = _batch()
    model.train()
    losses = model(batch)
    assert set(losses) == {f"loss_cls_{h}" for h in HEAD_NAMES} | {f"loss_triplet_{g}" for g in
                                                                   ("b1", "b2", "b3", "b22", "b33")}
    # recompute from the head outputs with independent formulas: CE / 8 and triplet / 5
    outputs = model.forward_outputs(model.preprocess_image(batch), batch["targets"])
    for head in HEAD_NAMES:
        expected = F.cross_entropy(outputs[head]["cls_outputs"], batch["targets"]) / 8
        assert torch.allclose(losses[f"loss_cls_{head}"], expected, atol=1e-5), head
    b33 = torch.cat([outputs[h]["features"] for h in ("b31", "b32", "b33")], dim=1)
    assert torch.allclose(losses["loss_triplet_b33"], triplet_loss(b33, batch["targets"], 0.3) / 5, atol=1e-5)
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "b1_head" in n)
    assert model.b2[1][0].conv1.weight.grad is not None


def test_mgn_eval_feature_is_the_eight_heads_in_fastreid_order():
    torch.manual_seed(0)
    model = build_model(_cfg("MGN", EMBEDDING_DIM=16, WITH_BNNECK=True)).eval()
    images = _batch(3)["images"]
    with torch.no_grad():
        outputs = model(images)
        maps = model.branch_maps(model.preprocess_image(images))
        expected = torch.cat([getattr(model, f"{h}_head")(maps[h])["features"] for h in EVAL_ORDER], dim=1)
    assert set(outputs) == {"features"}
    feature = outputs["features"]
    assert feature.shape == (3, 8 * 16) and torch.equal(feature, expected)
    # stripes: the part branches keep stride 1 (6 rows at 96 px), cut into 2 and 3 equal stripes
    assert maps["b2"].shape[2] == 6 and maps["b21"].shape[2] == 3 and maps["b31"].shape[2] == 2
    assert maps["b1"].shape[2] == 6  # default LAST_STRIDE 1; with 2 the global branch halves it
    cfg = _cfg("MGN")
    cfg.MODEL.BACKBONE.LAST_STRIDE = 2
    strided = build_model(cfg).eval()
    with torch.no_grad():
        maps = strided.branch_maps(strided.preprocess_image(images))
    assert maps["b1"].shape[2] == 3 and maps["b2"].shape[2] == 6
    assert torch.equal(strided.b2[1][0].conv1.weight, strided.b1[1][0].conv1.weight)


def test_mgn_rejects_non_resnet_backbones():
    cfg = _cfg("MGN")
    cfg.MODEL.BACKBONE.NAME = "build_osnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "x0_25"
    with pytest.raises(ValueError, match="ResNet-style"):
        build_model(cfg)


def _fastreid():
    config, meta_arch = import_fastreid("fastreid.config", "fastreid.modeling.meta_arch")
    return config.get_cfg, meta_arch.build_model


def test_mgn_branches_match_fastreid():
    """Same trunk/branch parameter names and shapes as FastReID's MGN (R50), and the same branch maps."""
    fastreid_cfg, fastreid_build = _fastreid()
    fcfg = fastreid_cfg()
    fcfg.MODEL.META_ARCHITECTURE = "MGN"
    fcfg.MODEL.DEVICE = "cpu"
    fcfg.MODEL.BACKBONE.PRETRAIN = False
    fcfg.MODEL.HEADS.NUM_CLASSES = 4
    torch.manual_seed(0)
    ref = fastreid_build(fcfg).eval()
    cfg = _cfg("MGN", depth="50x")
    cfg.MODEL.BACKBONE.STEM_POOL_CEIL = True  # FastReID's ResNet stem pooling
    ours = build_model(cfg).eval()
    ref_trunk = {k: v for k, v in ref.state_dict().items() if k.split(".")[0] in ("backbone", "b1", "b2", "b3")}
    ours_trunk = {k: v for k, v in ours.state_dict().items() if k.split(".")[0] in ("backbone", "b1", "b2", "b3")}
    assert {k: v.shape for k, v in ref_trunk.items()} == {k: v.shape for k, v in ours_trunk.items()}
    ours.load_state_dict(ref_trunk, strict=False)
    x = torch.randn(2, 3, 96, 48)
    with torch.no_grad():
        shared = ref.backbone(x.clone())
        maps = ours.branch_maps(x)
        for name in ("b1", "b2", "b3"):
            assert torch.allclose(maps[name], getattr(ref, name)(shared.clone()), atol=1e-4), name


def _brute_force_memory_loss(query, targets, queue, labels, own, gamma=32.0, margin=0.25):
    total = 0.0
    for i in range(query.shape[0]):
        pos, neg = [], []
        for j in range(queue.shape[1]):
            if labels[j] < 0 or j == own[i]:
                continue
            s = float(query[i] @ queue[:, j])
            (pos if labels[j] == targets[i] else neg).append(s)
        lse_p = math.log(sum(math.exp(-gamma * s) for s in pos)) if pos else -1e9
        lse_n = math.log(sum(math.exp(gamma * (s + margin)) for s in neg)) if neg else -1e9
        total += math.log1p(math.exp(lse_p + lse_n)) if lse_p + lse_n < 50 else lse_p + lse_n
    return total / query.shape[0]


def test_memory_loss_matches_brute_force_with_wraparound_and_empty_slots():
    torch.manual_seed(0)
    memory = CrossBatchMemory(dim=4, size=6)
    memory.queue.copy_(F.normalize(torch.randn(4, 6), dim=0))
    memory.queue_label.copy_(torch.tensor([0, 1, -1, 2, 0, -1]))
    memory.queue_ptr.fill_(5)  # the batch of 3 wraps around: slots 5, 0, 1
    features, targets = torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 1])
    loss = memory(features, targets)
    assert memory.queue_label.tolist() == [1, 1, -1, 2, 0, 0] and int(memory.queue_ptr) == 2
    query = F.normalize(features.detach(), dim=1)
    assert torch.allclose(memory.queue[:, [5, 0, 1]].t(), query)
    expected = _brute_force_memory_loss(query, targets.tolist(), memory.queue, memory.queue_label.tolist(),
                                        own=[5, 0, 1])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_memory_rejects_batches_larger_than_the_queue():
    with pytest.raises(ValueError, match="QUEUE_SIZE"):
        CrossBatchMemory(dim=4, size=2)(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_moco_adds_the_memory_loss_and_fills_the_queue():
    cfg = _cfg("MoCo", WITH_BNNECK=True)
    cfg.MODEL.QUEUE_SIZE = 16
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, MoCo) and model.memory.queue.shape == (512, 16)
    model.train()
    batch = _batch(8, 64, 32)
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_mb"} and losses["loss_mb"] > 0
    assert model.memory.queue_label[:8].tolist() == batch["targets"].tolist() and int(model.memory.queue_ptr) == 8
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert model(batch["images"])["features"].shape == (8, 512)


def test_mgn_routes_losses_by_their_declared_outputs():
    """A metric loss failing inside (here with a KeyError) fails loudly: it is never re-applied as a
    classification loss; a loss that does not declare its inputs is refused."""
    from torch import nn

    class BrokenMetric(nn.Module):
        loss_name = "loss_broken"
        required_outputs = ("features",)

        def forward(self, outputs, targets):
            raise KeyError("lookup inside the metric loss")

    class Undeclared(nn.Module):
        loss_name = "loss_undeclared"

        def forward(self, outputs, targets):
            return outputs["features"].sum()

    model = build_model(_cfg("MGN", EMBEDDING_DIM=16, WITH_BNNECK=True)).train()
    outputs = model.forward_outputs(model.preprocess_image(_batch()), _batch()["targets"])
    targets = _batch()["targets"]
    model.loss_modules = nn.ModuleList([BrokenMetric()])
    with pytest.raises(KeyError, match="lookup inside the metric loss"):
        model.losses(outputs, targets)
    model.loss_modules = nn.ModuleList([Undeclared()])
    with pytest.raises(TypeError, match="Undeclared must declare required_outputs"):
        model.losses(outputs, targets)
