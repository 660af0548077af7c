"""The reID report (query + gallery, Market-1501 protocol): every number comes from
:mod:`omnireid.evaluation` (ranks, ROC, distances, rank lists); this module only lays them out."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from omnireid.evaluation import evaluate_features, pair_distances, rank_lists, roc_curve

from .base import REPORT_PROTOCOLS, ReportOptions
from .html import Raw, Report, Section, Thumbnails, esc, figure_html, fmt, table
from .inputs import ReportInput, ReportInputError

SUMMARY_KEYS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


@dataclass
class QueryGallery:
    """A query set searched against a gallery, with identities and cameras (the reID view of a test set)."""

    query: np.ndarray
    gallery: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_cams: np.ndarray
    g_cams: np.ndarray
    q_paths: list[str]
    g_paths: list[str]
    metric: str
    group: str = "camera"  # what the breakdown and the rank-list filter group queries by
    q_groups: np.ndarray | None = None  # the query's group (default: its camera)
    g_groups: np.ndarray | None = None
    show_camera: bool = True

    def __post_init__(self) -> None:
        self.q_groups = self.q_cams if self.q_groups is None else self.q_groups
        self.g_groups = self.g_cams if self.g_groups is None else self.g_groups

    def label(self, pid: int, cam: int) -> str:
        return f"id {pid} · cam {cam}" if self.show_camera else f"class {pid}"

    @classmethod
    def from_input(cls, data: ReportInput) -> "QueryGallery":
        num_query = int(data.meta.get("num_query", 0))
        if not 0 < num_query < len(data.items):
            raise ReportInputError(f"{data.name}: meta num_query={num_query} must split the {len(data.items)} "
                                   "items into queries and a gallery")
        pids = data.field("targets").astype(np.int64)
        cams = data.field("camids").astype(np.int64)
        paths = data.paths
        return cls(data.features[:num_query], data.features[num_query:], pids[:num_query], pids[num_query:],
                   cams[:num_query], cams[num_query:], paths[:num_query], paths[num_query:], data.metric)

    def ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.q_pids, self.g_pids, self.q_cams, self.g_cams


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "set"


# ------------------------------------------------------------------------------------------------
# figures (matplotlib's object API: no global pyplot state)
# ------------------------------------------------------------------------------------------------
def _figure(width: float = 3.8, height: float = 2.9):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def cmc_figure(cmc: np.ndarray, name: str) -> str:
    fig, ax = _figure()
    ranks = np.arange(1, len(cmc) + 1)
    ax.plot(ranks, cmc * 100, marker="o", markersize=3, color="#2456c6")
    ax.text(0.97, 0.05, "\n".join(f"Rank-{r}: {cmc[r - 1] * 100:.1f}%" for r in (1, 5, 10) if r <= len(cmc)),
            transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    ax.set(xlabel="rank", ylabel="matching rate (%)", title=f"CMC: {name}", xlim=(0.5, len(cmc) + 0.5),
           ylim=(0, 101))
    ax.grid(alpha=0.3)
    return figure_html(fig, f"CMC curve of {name}")


def roc_figure(pos: np.ndarray, neg: np.ndarray, points: dict[str, float], name: str, sampled: bool) -> str:
    fpr, tpr, _ = roc_curve(pos, neg, max_points=4000)
    fig, ax = _figure()
    keep = fpr > 0
    ax.plot(fpr[keep], tpr[keep] * 100, color="#2456c6", label="ROC" + (" (sampled negatives)" if sampled else ""))
    for key, value in points.items():
        f = float(key.split("=")[1])
        ax.plot([f], [value], "o", color="#d23c3c")
        ax.annotate(f"{value:.1f}", (f, value), textcoords="offset points", xytext=(4, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="false positive rate", ylabel="true positive rate (%)", title=f"ROC: {name}", ylim=(0, 101),
           xlim=(max(1e-6, 0.5 / max(1, neg.size)), 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    return figure_html(fig, f"ROC curve of {name}")


def distance_figure(pos: np.ndarray, neg: np.ndarray, metric: str, name: str) -> str:
    fig, ax = _figure()
    values = np.concatenate([pos, neg])
    bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 61)
    ax.hist(neg, bins=bins, density=True, alpha=0.55, color="#d23c3c", label=f"different identity ({neg.size})")
    ax.hist(pos, bins=bins, density=True, alpha=0.55, color="#1a9b4b", label=f"true match ({pos.size})")
    ax.set(xlabel=f"{metric} distance", ylabel="density", title=f"Pair distances: {name}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_html(fig, f"distance distributions of {name}")


def group_figure(rows: list[tuple[int, dict[str, float]]], name: str, group: str) -> str:
    fig, ax = _figure(max(3.8, 0.6 * len(rows) + 2), 2.9)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [m["Rank-1"] for _, m in rows], 0.4, label="Rank-1", color="#2456c6")
    ax.bar(x + 0.2, [m["mAP"] for _, m in rows], 0.4, label="mAP", color="#f0a030")
    ax.set_xticks(x, [str(c) for c, _ in rows])
    ax.set(xlabel=f"query {group}", ylabel="%", title=f"Per query {group}: {name}", ylim=(0, 100))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return figure_html(fig, f"per-{group} results of {name}")


# ------------------------------------------------------------------------------------------------
# the sections
# ------------------------------------------------------------------------------------------------
@REPORT_PROTOCOLS.register("reid")
def reid_report(data: ReportInput, options: ReportOptions, thumbs: Thumbnails) -> Report:
    split = QueryGallery.from_input(data)
    return Report(data.name, data.protocol, query_gallery_sections(split, data.name, options, thumbs))


MARKET_PROTOCOL = ("Market-1501 protocol: gallery images of the query's identity <em>and</em> camera are ignored; "
                   "queries without a true match in the gallery are left out. Metrics in percent.")


def query_gallery_sections(split: QueryGallery, name: str, options: ReportOptions, thumbs: Thumbnails,
                           metrics: dict[str, float] | None = None, note: str = MARKET_PROTOCOL) -> list[Section]:
    """Metrics, curves, distances, per-camera results, worst queries and rank lists of a query/gallery split."""
    anchor = slug(name)
    ng = len(split.g_pids)
    result = evaluate_features(split.query, split.gallery, *split.ids(), metric=split.metric,
                               max_rank=min(50, ng), roc=True, memory_budget_mb=options.memory_budget_mb)
    summary = result.summary()
    shown = metrics if metrics is not None else summary
    ap = np.full(len(split.q_pids), np.nan)
    ap[result.valid] = result.all_AP
    lists = rank_lists(split.query, split.gallery, *split.ids(), k=min(options.top_k, ng), metric=split.metric,
                       backend="torch", memory_budget_mb=options.memory_budget_mb)
    pos, neg, total_neg = pair_distances(split.query, split.gallery, *split.ids(), metric=split.metric,
                                         max_negatives=options.max_negatives,
                                         memory_budget_mb=options.memory_budget_mb)
    sampled = neg.size < total_neg
    roc_points = {k: v for k, v in summary.items() if k.startswith("TPR@")}

    plots = "".join([
        _plot_block(f"{anchor}-cmc", cmc_figure(result.cmc, name),
                    "CMC: fraction of queries whose first true match is within the top r."),
        _plot_block(f"{anchor}-roc", roc_figure(pos, neg, roc_points, name, sampled),
                    f"ROC over every query-gallery pair: {pos.size} true-match pairs, {total_neg} "
                    "different-identity pairs" + (f" ({neg.size} sampled uniformly for the curve; the red "
                                                   "points are exact)" if sampled else "") + ". TPR at fixed "
                    "FPR: " + ", ".join(f"{k[4:]}: {fmt(v)}%" for k, v in roc_points.items()) + "."),
        _plot_block(f"{anchor}-distances", distance_figure(pos, neg, split.metric, name),
                    f"{esc(split.metric).capitalize()} distances of true-match and different-identity pairs: "
                    "where they overlap, impostors outrank true matches."),
    ])
    sections = [
        Section(f"{anchor}-metrics", "Metrics", _metrics_table(name, shown, split, result.valid), note),
        Section(f"{anchor}-curves", "CMC, ROC and distances", f'<div class="plots">{plots}</div>'),
        _group_section(split, result.valid, name, anchor, options),
        _worst_section(split, ap, lists, name, anchor, options, thumbs),
        _ranklist_section(split, ap, lists, name, anchor, options, thumbs),
    ]
    return sections


def _plot_block(anchor: str, image: str, caption: str) -> str:
    return f'<figure class="plot" id="{anchor}">{image}<figcaption>{caption}</figcaption></figure>'


def _metrics_table(name: str, summary: dict[str, float], split: QueryGallery, valid: np.ndarray) -> str:
    keys = [k for k in SUMMARY_KEYS if k in summary] + [k for k in summary if k not in SUMMARY_KEYS]
    header = ["test set", *keys, "queries", "with a true match", "gallery", "identities"]
    row = [name, *[fmt(summary[k]) for k in keys], len(split.q_pids), int(valid.sum()), len(split.g_pids),
           len(np.unique(np.concatenate([split.q_pids, split.g_pids])))]
    return table(header, [row], "metrics")


def _group_section(split: QueryGallery, valid: np.ndarray, name: str, anchor: str,
                   options: ReportOptions) -> Section:
    rows, plotted = [], []
    for cam in np.unique(split.q_groups).tolist():
        mask = split.q_groups == cam
        gallery_count = int((split.g_groups == cam).sum())
        with_match = int(valid[mask].sum())
        try:
            metrics = evaluate_features(split.query[mask], split.gallery, split.q_pids[mask], split.g_pids,
                                        split.q_cams[mask], split.g_cams, metric=split.metric,
                                        max_rank=min(50, len(split.g_pids)),
                                        memory_budget_mb=options.memory_budget_mb).summary()
        except ValueError:  # no query of this group has a true match
            rows.append([cam, int(mask.sum()), with_match, gallery_count, "–", "–", "–", "–"])
            continue
        plotted.append((cam, metrics))
        rows.append([cam, int(mask.sum()), with_match, gallery_count, fmt(metrics["Rank-1"]),
                     fmt(metrics["Rank-5"]), fmt(metrics["mAP"]), fmt(metrics["mINP"])])
    group = split.group
    body = table([f"query {group}", "queries", "with a true match", f"gallery images in {group}", "Rank-1", "Rank-5",
                  "mAP", "mINP"], rows, f"per-{group}")
    if plotted:
        body += group_figure(plotted, name, group)
    return Section(f"{anchor}-{group}-breakdown" if group != "camera" else f"{anchor}-cameras", f"Per {group}", body,
                   f"Each query {group}'s queries evaluated against the whole gallery.")


def _first_match(lists, q: int) -> str:
    hits = np.flatnonzero(lists.matches[q])
    return str(int(hits[0]) + 1) if hits.size else f"> {lists.matches.shape[1]}"


def _worst_queries(ap: np.ndarray, count: int) -> np.ndarray:
    valid = np.flatnonzero(~np.isnan(ap))
    return valid[np.argsort(ap[valid], kind="stable")[:count]]


def _worst_section(split: QueryGallery, ap: np.ndarray, lists, name: str, anchor: str, options: ReportOptions,
                   thumbs: Thumbnails) -> Section:
    rows = []
    for q in _worst_queries(ap, options.worst).tolist():
        image = Raw(f'<a href="#{anchor}-q{q}"><img alt="query {q}" src="{thumbs(split.q_paths[q])}" '
                    f'height="{options.thumb_height // 2}"></a>')
        cam = [int(split.q_cams[q])] if split.show_camera else []
        rows.append([f"#{q}", image, int(split.q_pids[q]), *cam, fmt(ap[q] * 100), _first_match(lists, q),
                     int(lists.num_pos[q])])
    header = ["query", "image", "identity", *(["camera"] if split.show_camera else []), "AP (%)",
              "first true match at rank", "true matches in gallery"]
    return Section(f"{anchor}-worst", "Worst queries by AP", table(header, rows, "worst"),
                   "Click an image to jump to its rank list.")


def _ranklist_rows(ap: np.ndarray, options: ReportOptions) -> list[int]:
    """The worst queries, then queries spread evenly over the rest, up to ``max_queries``, in query order."""
    chosen = set(_worst_queries(ap, min(options.worst, options.max_queries)).tolist())
    rest = np.array([q for q in range(len(ap)) if q not in chosen], dtype=np.int64)
    room = options.max_queries - len(chosen)
    if room > 0 and rest.size:
        picks = np.unique(np.linspace(0, rest.size - 1, min(room, rest.size)).round().astype(np.int64))
        chosen.update(rest[picks].tolist())
    return sorted(chosen)


def _ranklist_section(split: QueryGallery, ap: np.ndarray, lists, name: str, anchor: str, options: ReportOptions,
                      thumbs: Thumbnails) -> Section:
    rows = _ranklist_rows(ap, options)
    blocks = []
    for q in rows:
        if np.isnan(ap[q]):
            outcome, label = "nomatch", "no true match in gallery"
        elif lists.matches[q, 0]:
            outcome, label = "success", "rank-1 correct"
        else:
            outcome, label = "failure", "rank-1 wrong"
        ap_text = f"AP {fmt(ap[q] * 100, 1)}" if not np.isnan(ap[q]) else "AP –"
        cells = [f'<figure class="query"><img alt="query {q}" src="{thumbs(split.q_paths[q])}">'
                 f"<figcaption>query #{q}<br>{split.label(int(split.q_pids[q]), int(split.q_cams[q]))}<br>{ap_text}<br>"
                 f'<span class="badge {outcome}">{esc(label)}</span></figcaption></figure>']
        for rank, (g, dist, match) in enumerate(zip(lists.indices[q], lists.distances[q], lists.matches[q]), 1):
            if g < 0:
                break
            kind, mark = ("match", "✓") if match else ("nonmatch", "✗")
            cells.append(f'<figure class="hit {kind}"><img alt="rank {rank}" src="{thumbs(split.g_paths[g])}">'
                         f"<figcaption>{mark} {rank}. d={dist:.3f}<br>"
                         f"{split.label(int(split.g_pids[g]), int(split.g_cams[g]))}</figcaption></figure>")
        blocks.append(f'<div class="ranklist" id="{anchor}-q{q}" data-{split.group}="{int(split.q_groups[q])}" '
                      f'data-outcome="{outcome}">{"".join(cells)}</div>')
    group = split.group
    options_html = "".join(f'<option value="{c}">{group} {c}</option>' for c in np.unique(split.q_groups[rows]).tolist())
    filters = (f'<div class="filters"><label>{group} <select data-filter="{group}"><option value="">all</option>'
               f'{options_html}</select></label><label>outcome <select data-filter="outcome"><option value="">all</option>'
               '<option value="success">rank-1 correct</option><option value="failure">rank-1 wrong</option>'
               '<option value="nomatch">no true match</option></select></label>'
               '<span class="shown"></span></div>')
    removed = "junk (same identity and camera)" if split.show_camera else "the query itself"
    intro = (f"{len(rows)} of {len(split.q_pids)} queries: the {min(options.worst, len(rows))} worst by AP and a spread "
             f"of the others. Top {lists.indices.shape[1]} gallery images after removing {removed}; "
             "green ✓ = true match, red ✗ = other identity; d = distance.")
    return Section(f"{anchor}-ranklists", "Rank lists", f'<div class="ranklists">{filters}{"".join(blocks)}</div>',
                   intro)
