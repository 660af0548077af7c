"""`omnireid predict`'s attributes decoder: names, probabilities at the threshold, group argmax."""
import pytest
import torch

import omnireid.tasks.attributes  # noqa: F401  (registers the attributes decoder)
from omnireid.inference.decoders import OUTPUT_DECODERS

META = {"attribute_names": ["hat", "bag"], "attribute_groups": {"age": ["young", "adult", "old"]}}


def test_attributes_decoder():
    values = torch.tensor([[0.9, 0.5, 0.2, 0.7, 0.1], [0.1, 0.6, 0.4, 0.4, 0.2]])
    rows = OUTPUT_DECODERS.get("attributes")(values, META, 2)
    assert rows[0]["positive"] == ["hat"]  # 0.5 is not > 0.5
    assert rows[0]["probabilities"] == {"hat": 0.9, "bag": 0.5}
    assert rows[0]["age"]["class"] == "adult" and rows[0]["age"]["probability"] == pytest.approx(0.7)
    assert [t["class"] for t in rows[1]["age"]["top"]] == ["young", "adult"]  # tie: the lower index first
    assert OUTPUT_DECODERS.get("attributes")(values, {**META, "attribute_threshold": 0.55}, 1)[1]["positive"] == ["bag"]
    with pytest.raises(ValueError, match="describes 5"):
        OUTPUT_DECODERS.get("attributes")(values[:, :4], META, 1)
