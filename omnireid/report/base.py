"""The report registry: one builder per test protocol, and the function that renders a page from them.

A protocol's builder is ``fn(data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> Report``
registered under the protocol's name (``reid``, ``retrieval``, ``verification``, ...), so a task adds
its report by registering one function; its numbers come from :mod:`omnireid.evaluation`.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Callable, Sequence

from omnireid.utils.registry import Registry

from .html import Report, Thumbnails, render_page
from .inputs import ReportInput, ReportInputError

REPORT_PROTOCOLS = Registry("report protocol")

ReportBuilder = Callable[[ReportInput, "ReportOptions", Thumbnails], Report]


def reads_outputs(*names: str) -> Callable[[ReportBuilder], ReportBuilder]:
    """Declare the model outputs besides ``features`` a builder reads (e.g. ``attributes``), so that
    ``omnireid report`` keeps them for its protocol (:func:`report_outputs`)."""
    def mark(builder: ReportBuilder) -> ReportBuilder:
        builder.outputs = tuple(names)  # type: ignore[attr-defined]
        return builder
    return mark


def report_outputs(protocol: str) -> tuple[str, ...]:
    """The model outputs the report of ``protocol`` reads besides ``features`` (none when unregistered)."""
    if protocol not in REPORT_PROTOCOLS:
        return ()
    return tuple(getattr(REPORT_PROTOCOLS.get(protocol), "outputs", ()))


@dataclass
class ReportOptions:
    """How much of the data goes into the page."""

    top_k: int = 10  # gallery items per rank list
    max_queries: int = 100  # rank lists shown (the worst queries first, then a spread of the rest)
    worst: int = 20  # rows of the worst-queries table
    thumb_height: int = 96
    max_negatives: int = 2_000_000  # negative pairs sampled for the distance histogram and the ROC curve
    memory_budget_mb: float = 512

    def __post_init__(self) -> None:
        for name in ("top_k", "max_queries", "worst", "thumb_height", "max_negatives"):
            if getattr(self, name) < 1:
                raise ReportInputError(f"report option {name} must be >= 1, got {getattr(self, name)}")


def build_report(inputs: Sequence[ReportInput], options: ReportOptions | None = None,
                 title: str = "omnireid evaluation report", subtitle: str = "") -> str:
    """The HTML page for ``inputs`` (one block per test set, built by its protocol's registered builder)."""
    options = options or ReportOptions()
    thumbs = Thumbnails(options.thumb_height)
    reports = []
    for data in inputs:
        if data.protocol not in REPORT_PROTOCOLS:
            raise ReportInputError(f"{data.name}: no report for protocol {data.protocol!r}; registered: "
                                   f"{', '.join(sorted(REPORT_PROTOCOLS.names()))}")
        reports.append(REPORT_PROTOCOLS.get(data.protocol)(data, options, thumbs))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return render_page(title, subtitle or f"generated {stamp}", reports)
