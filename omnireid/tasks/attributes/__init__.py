"""Pedestrian attribute recognition: binary attributes (weighted BCE) and categorical groups (CE),
Rethinking_of_PAR's metrics, PA-100K / Market-1501-attribute / DukeMTMC-attribute / CSV data."""
from . import decoder  # noqa: F401,E402  (registers the ``attributes`` decoder of ``omnireid predict``)
