"""Pedestrian attribute recognition: binary attributes (weighted BCE) and categorical groups (CE),
Rethinking_of_PAR's metrics, PA-100K / Market-1501-attribute / DukeMTMC-attribute / CSV data, joint
reID + attribute models. Importing the package registers every piece (docs/attributes.md)."""
from . import config, datasets, decoder, demo, distill, evaluator, head, modeling  # noqa: F401  (registration)
from .metrics import binary_attribute_metrics, evaluate_attributes, group_metrics
from .schema import AttributeGroup, AttributeSchema

__all__ = ["AttributeGroup", "AttributeSchema", "binary_attribute_metrics", "evaluate_attributes", "group_metrics"]
