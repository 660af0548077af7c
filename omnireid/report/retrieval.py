"""The retrieval report (one set, every item a query against all the others): the metrics are
:func:`omnireid.evaluation.evaluate_retrieval`'s (Recall@K, R-Precision, MAP@R); curves, distances,
per-class results, worst queries and rank lists reuse the query/gallery sections with each item its
own "camera", so that the junk rule (same identity and camera) removes exactly the query itself."""
from __future__ import annotations

import numpy as np

from omnireid.evaluation.retrieval import evaluate_retrieval

from .base import REPORT_PROTOCOLS, ReportOptions
from .html import Report, Thumbnails
from .inputs import ReportInput
from .reid import QueryGallery, query_gallery_sections

RETRIEVAL_NOTE = ("Retrieval protocol: every item is a query against all the others (itself excluded by its index). "
                  "Recall@K: a same-class item among the first K; R-Precision and MAP@R over the first R neighbours "
                  "(R = other items of the class); Rank-r in the curves equals Recall@r. Metrics in percent.")


@REPORT_PROTOCOLS.register("retrieval")
def retrieval_report(data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> Report:
    labels = data.field("targets").astype(np.int64)
    own = np.arange(len(labels))
    split = QueryGallery(data.features, data.features, labels, labels, own, own, data.paths, data.paths, data.metric,
                         group="class", q_groups=labels, g_groups=labels, show_camera=False)
    metrics = evaluate_retrieval(data.features, labels, metric=data.metric,
                                 memory_budget_mb=options.memory_budget_mb).summary()
    return Report(data.name, data.protocol,
                  query_gallery_sections(split, data.name, options, thumbs, metrics=metrics, note=RETRIEVAL_NOTE))
