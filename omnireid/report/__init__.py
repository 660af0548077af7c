"""Evaluation reports: one self-contained HTML page per run (metrics, curves, distances, per-camera
results, worst queries, filterable rank lists), built per test protocol through ``REPORT_PROTOCOLS``.

Needs the ``report`` extra (matplotlib). Every number comes from :mod:`omnireid.evaluation`.
"""
from . import attributes, reid, retrieval, verification  # noqa: F401  (register the protocols' reports)
from .base import REPORT_PROTOCOLS, ReportOptions, build_report, report_outputs
from .html import Report, Section, Thumbnails
from .inputs import ReportInput, ReportInputError, load_features, save_features

__all__ = ["REPORT_PROTOCOLS", "Report", "ReportInput", "ReportInputError", "ReportOptions", "Section", "Thumbnails",
           "build_report", "load_features", "report_outputs", "save_features"]
