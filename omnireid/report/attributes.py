"""The attributes report: the numbers are the attribute task's (:func:`omnireid.tasks.attributes.
evaluate_attributes`, Rethinking_of_PAR's definitions at the run's threshold); the page adds the
per-attribute table sorted worst first, a per-attribute mA chart and, for the worst binary
attributes, the images they get most confidently wrong."""
from __future__ import annotations

import numpy as np

from omnireid.tasks.attributes.metrics import evaluate_attributes
from omnireid.tasks.attributes.schema import DEFAULT_THRESHOLD, THRESHOLD_KEY, AttributeSchema, check_threshold

from .base import REPORT_PROTOCOLS, ReportOptions, reads_outputs
from .html import Raw, Report, Section, Thumbnails, figure_html, fmt, table
from .inputs import ReportInput, ReportInputError
from .reid import _figure, slug

WORST_ATTRIBUTES = 3  # binary attributes whose mistakes are shown with images
ATTRIBUTES_NOTE = ("Attribute protocol (Rethinking_of_PAR): a binary attribute is predicted positive when p > "
                   "{threshold:g}; mA = mean over attributes of (TPR + TNR) / 2; Acc / Prec / Rec are instance-based "
                   "means and F1 their harmonic mean of the means; a group's accuracy is that of its argmax. "
                   "Metrics in percent.")


def attribute_chart(rows: list[dict[str, object]], name: str) -> str:
    """Horizontal bars of each attribute's mA (a group's balanced accuracy), worst at the top."""
    fig, ax = _figure(5.2, max(2.4, 0.28 * len(rows) + 1.0))
    y = np.arange(len(rows))
    values = [float(r["mA"]) for r in rows]
    colours = ["#2456c6" if r["kind"] == "binary" else "#f0a030" for r in rows]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [str(r["attribute"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(50, color="#8a8f99", linewidth=1, linestyle="--")
    ax.set(xlabel="mA (%) — groups: balanced accuracy", xlim=(0, 100), title=f"Per attribute: {name}")
    ax.grid(alpha=0.3, axis="x")
    return figure_html(fig, f"per-attribute mA of {name}")


def _mistakes(scores: np.ndarray, labels: np.ndarray, known: np.ndarray, column: int, threshold: float,
              count: int) -> list[tuple[int, float, int]]:
    """``(item, p, label)`` of the images attribute ``column`` gets wrong, the most confident first."""
    p = scores[:, column]
    wrong = known[:, column] & ((p > threshold) != (labels[:, column] > 0.5))
    items = np.flatnonzero(wrong)
    confidence = np.abs(p[items] - threshold)
    return [(int(i), float(p[i]), int(labels[i, column] > 0.5))
            for i in items[np.argsort(-confidence, kind="stable")][:count]]


@REPORT_PROTOCOLS.register("attributes")
@reads_outputs("attributes")
def attributes_report(data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> Report:
    try:
        schema = AttributeSchema.from_metadata(data.meta)
    except KeyError as exc:
        raise ReportInputError(f"{data.name}: the attributes report needs the attribute schema in the test set's "
                               f"metadata: {exc.args[0]}") from None
    threshold = check_threshold(data.meta.get(THRESHOLD_KEY, DEFAULT_THRESHOLD), f"{data.name} {THRESHOLD_KEY}")
    scores = data.output("attributes")
    labels = data.field("attributes").reshape(len(scores), -1) if schema.num_binary else None
    known = data.field("attribute_mask").reshape(len(scores), -1) > 0 if schema.num_binary else None
    groups = data.field("attribute_groups").reshape(len(scores), -1) if schema.num_groups else None
    results = evaluate_attributes(scores, schema, labels, known, groups, threshold)
    summary = results.summary()
    anchor = slug(data.name)
    sections = [Section(f"{anchor}-metrics", "Metrics",
                        table(["test set", *summary, "images"],
                              [[data.name, *[fmt(v) for v in summary.values()], len(scores)]], "metrics"),
                        ATTRIBUTES_NOTE.format(threshold=threshold))]

    rows = sorted(results.table(), key=lambda r: (np.nan_to_num(float(r["mA"]), nan=101.0), str(r["attribute"])))
    header = ["attribute", "kind", "TPR", "TNR", "mA", "positive ratio", "accuracy", "positives", "negatives"]
    body = [[r["attribute"], r["kind"], fmt(r["TPR"]), fmt(r["TNR"]), fmt(r["mA"]), fmt(r["pos_ratio"]),
             fmt(r["acc"]), r["positives"], r["negatives"]] for r in rows]
    notes = []
    if results.binary is not None and results.binary.attributes_without_positives:
        notes.append("no positive test label (TPR counted as 0): "
                     + ", ".join(results.binary.attributes_without_positives))
    sections.append(Section(
        f"{anchor}-per-attribute", "Per attribute (worst first)",
        table(header, body, "per-attribute") + f'<div class="plots">{attribute_chart(rows, data.name)}</div>',
        "Binary attributes: TPR = TP/P, TNR = TN/N, mA = their mean, positive ratio = P / known labels; groups: "
        "accuracy and, in the mA column, balanced accuracy (mean per-class recall)."
        + (" " + "; ".join(notes) + "." if notes else "")))

    if schema.num_binary:
        worst = [r for r in rows if r["kind"] == "binary" and not np.isnan(float(r["mA"]))][:WORST_ATTRIBUTES]
        blocks = []
        for row in worst:
            column = list(schema.binary).index(str(row["attribute"]))
            cells = []
            for item, p, label in _mistakes(scores, labels, known, column, threshold, options.top_k):
                kind = "false negative" if label else "false positive"
                cells.append(f'<figure class="hit nonmatch"><img alt="{kind} {item}" src="{thumbs(data.paths[item])}">'
                             f"<figcaption>#{item} p={p:.3f}<br>{kind}</figcaption></figure>")
            title = (f'<figure class="query"><figcaption><b>{row["attribute"]}</b><br>mA {fmt(row["mA"])}<br>'
                     f'TPR {fmt(row["TPR"])} / TNR {fmt(row["TNR"])}</figcaption></figure>')
            blocks.append(f'<div class="mistakes">{title}{"".join(cells) or "no mistakes"}</div>')
        sections.append(Section(
            f"{anchor}-worst", "Worst attributes: most confident mistakes",
            Raw("".join(blocks)),
            f"The {len(worst)} binary attributes with the lowest mA; for each, up to {options.top_k} wrongly "
            "predicted images, the most confident first (p = predicted probability)."))
    return Report(data.name, data.protocol, sections)
