"""Cross-entropy on class distributions (MixUp / CutMix labels) and the ``logits`` output decoder."""
from __future__ import annotations

import pytest
import torch

from omnireid.inference.decoders import OUTPUT_DECODERS
from omnireid.modeling.losses.cross_entropy import cross_entropy_loss


def test_soft_target_cross_entropy_is_the_mix_of_the_hard_ones():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    a, b = torch.randint(0, 5, (6,)), torch.randint(0, 5, (6,))
    lam = 0.3
    soft = lam * torch.nn.functional.one_hot(a, 5).float() + (1 - lam) * torch.nn.functional.one_hot(b, 5).float()
    for eps in (0.0, 0.1):
        per_a = torch.stack([cross_entropy_loss(logits[i : i + 1], a[i : i + 1], eps) for i in range(6)])
        per_b = torch.stack([cross_entropy_loss(logits[i : i + 1], b[i : i + 1], eps) for i in range(6)])
        expected = (lam * per_a + (1 - lam) * per_b).mean()
        assert cross_entropy_loss(logits, soft, eps) == pytest.approx(expected.item(), rel=1e-6)
        hard = torch.nn.functional.one_hot(a, 5).float()
        assert cross_entropy_loss(logits, hard, eps) == pytest.approx(cross_entropy_loss(logits, a, eps).item())


def test_logits_decoder_names_classes_and_breaks_ties_by_index():
    logits = torch.tensor([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    rows = OUTPUT_DECODERS.get("logits")(logits, {"class_names": ["cat", "dog", "bird"]}, 2)
    p = torch.softmax(logits.double(), 1)
    assert rows[0]["class"] == "dog" and rows[0]["probability"] == pytest.approx(p[0, 1].item(), abs=1e-6)
    assert [t["class"] for t in rows[0]["top"]] == ["dog", "bird"]
    assert rows[1]["class"] == "cat" and [t["class"] for t in rows[1]["top"]] == ["cat", "dog"]  # tie: lower index
    assert OUTPUT_DECODERS.get("logits")(logits, {}, 1)[0] == {"class": "1", "probability": pytest.approx(p[0, 1].item(), abs=1e-6)}
    with pytest.raises(ValueError, match="names 2"):
        OUTPUT_DECODERS.get("logits")(logits, {"class_names": ["a", "b"]}, 1)
