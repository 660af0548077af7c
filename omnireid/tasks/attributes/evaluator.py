"""The evaluator of the ``attributes`` test protocol: Rethinking_of_PAR's metrics (see :mod:`.metrics`).

It reads ``outputs["attributes"]`` (probabilities, layout of :mod:`.schema`) and the batch's
``attributes`` / ``attribute_mask`` / ``attribute_groups``. ``evaluate()`` returns the headline
metrics (``mA, Acc, Prec, Rec, F1``, ``<group>_acc``, ``group_acc``) and per-attribute details under
``<attribute>/<metric>`` keys (TPR, TNR, mA, pos_ratio; a group's acc and balanced mA), all in
percent, so ``metrics.json`` records the whole table. It also logs the per-attribute table and
writes it to ``<output_dir>/<test set>_attributes.csv``.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from typing import Any

import torch

from omnireid.evaluation import EVALUATOR_REGISTRY, SampleEvaluator, register_protocol
from omnireid.evaluation.headline import register_headline_metric
from omnireid.utils import comm
from omnireid.utils.file_io import atomic_write_text

from .datasets import ATTRIBUTES_PROTOCOL
from .metrics import AttributeResults, evaluate_attributes
from .schema import DEFAULT_THRESHOLD, AttributeSchema, check_threshold

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("attribute", "kind", "positives", "negatives", "pos_ratio", "TPR", "TNR", "mA", "acc")
DETAIL_COLUMNS = ("TPR", "TNR", "mA", "pos_ratio", "acc")


def format_attribute_table(results: AttributeResults) -> str:
    """A markdown table with one row per attribute (percent; empty cells where a column does not apply)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|---" * len(TABLE_COLUMNS) + "|"]
    for row in results.table():
        cells = []
        for column in TABLE_COLUMNS:
            value = row[column]
            cells.append("" if isinstance(value, float) and math.isnan(value) else
                         f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attribute_table_csv(results: AttributeResults) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in results.table():
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


@EVALUATOR_REGISTRY.register()
@register_protocol(ATTRIBUTES_PROTOCOL)
class AttributeEvaluator(SampleEvaluator):
    """Binary attribute metrics at ``TEST.THRES`` and accuracy of the categorical groups."""

    def __init__(self, schema: AttributeSchema, threshold: float = DEFAULT_THRESHOLD, name: str = "attributes",
                 output_dir: str | None = None) -> None:
        self.schema = schema
        self.threshold = check_threshold(threshold)
        self.name = name
        self.output_dir = output_dir
        super().__init__()

    @classmethod
    def from_config(cls, cfg: Any, test_set: Any, output_dir: str | None = None) -> "AttributeEvaluator":
        try:
            schema = AttributeSchema.from_metadata(test_set.meta)
        except KeyError as exc:
            raise ValueError(f"{test_set.name}: AttributeEvaluator needs an attribute test set: {exc.args[0]}") from None
        return cls(schema, float(cfg.TEST.THRES), test_set.name, output_dir)

    def collect(self, batch: dict, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "attributes" not in outputs:
            raise KeyError(f"{self.name}: the model's eval outputs {sorted(outputs)} have no 'attributes'; "
                           "attribute evaluation needs an attribute head (MODEL.HEADS.NAME AttributeHead)")
        scores = outputs["attributes"]
        if scores.dim() != 2 or scores.shape[1] != self.schema.num_outputs:
            raise ValueError(f"{self.name}: the model predicts {tuple(scores.shape)[1:]} attribute columns but the "
                             f"test set has {self.schema.num_outputs} ({self.schema.num_binary} binary + groups "
                             f"{[len(g.classes) for g in self.schema.groups]}): model and data do not match")
        n = len(scores)
        return {"scores": scores.float(),
                "attributes": torch.as_tensor(batch["attributes"]).float().reshape(n, -1),
                "mask": torch.as_tensor(batch["attribute_mask"]).float().reshape(n, -1),
                "groups": torch.as_tensor(batch["attribute_groups"]).long().reshape(n, -1)}

    def compute(self, data: dict[str, torch.Tensor]) -> dict[str, float]:
        results = evaluate_attributes(data["scores"].numpy(), self.schema, data["attributes"].numpy(),
                                      data["mask"].numpy(), data["groups"].numpy(), self.threshold)
        if comm.is_main_process():
            self._report(results)
        metrics = results.summary()
        for row in results.table():
            for column in DETAIL_COLUMNS:
                value = row[column]
                if not (isinstance(value, float) and math.isnan(value)):
                    metrics[f"{row['attribute']}/{column}"] = float(value)
        return metrics

    def _report(self, results: AttributeResults) -> None:
        b = results.binary
        notes = []
        if b is not None and b.attributes_without_positives:
            notes.append(f"no positive label (TPR counted as 0): {b.attributes_without_positives}")
        if b is not None and b.instances_without_predictions:
            notes.append(f"{b.instances_without_predictions} of {b.num_instances} images have no predicted positive "
                         "(precision counted as 0)")
        logger.info("Attributes of %s (positive when p > %g):\n%s%s", self.name, self.threshold,
                    format_attribute_table(results), "".join(f"\n  note: {n}" for n in notes))
        if self.output_dir:
            atomic_write_text(os.path.join(self.output_dir, f"{self.name}_attributes.csv"),
                              attribute_table_csv(results))


@register_headline_metric(ATTRIBUTES_PROTOCOL, name="mA (group_acc when there is no binary attribute)")
def _attributes_headline(metrics: dict[str, float]) -> float:
    """PAR's and FastAttr's model-selection number: label-based mA."""
    return metrics["mA"] if "mA" in metrics else metrics["group_acc"]
