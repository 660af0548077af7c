"""What an experiment leaves behind: the table, ``results.csv``, ``best_config.yaml`` and a plot.

Works on plain :class:`TrialSummary` rows (built from Ray's results by the runner), so it is
testable and does not import Ray.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from omnireid.config import CfgNode
from omnireid.config.fastreid import nest
from omnireid.utils.file_io import atomic_write_bytes, atomic_write_text

from .space import SearchSpace

COMPLETED, STOPPED, ERROR, PENDING = "completed", "stopped early", "error", "not run"


@dataclass
class TrialSummary:
    """One trial: its config values, last reported metrics, history and how it ended."""

    trial_id: str
    values: dict[str, Any]  # config key -> value (fixed values excluded)
    metrics: dict[str, Any]  # the last report
    history: list[tuple[float, float]] = field(default_factory=list)  # (wall seconds, metric) per report
    error: str = ""

    @property
    def status(self) -> str:
        if self.error:
            return ERROR
        if not self.metrics or "iteration" not in self.metrics:
            return PENDING
        return COMPLETED if self.metrics["iteration"] >= self.metrics["max_iter"] else STOPPED


def best_trial(trials: list[TrialSummary], metric: str, mode: str) -> TrialSummary | None:
    """The best trial among those that trained to the end (a retrain of its config reproduces it)."""
    done = [t for t in trials if t.status == COMPLETED and _finite(t.metrics.get(metric))]
    if not done:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(done, key=lambda t: sign * float(t.metrics[metric]))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(trials: list[TrialSummary], metric: str) -> tuple[list[str], list[str]]:
    keys = list(dict.fromkeys(k for t in trials for k in t.values))
    reported = list(dict.fromkeys(k for t in trials for k in t.metrics))
    metric_cols = [metric] + [k for k in reported if k != metric and k not in _BOOKKEEPING]
    return keys, metric_cols


_BOOKKEEPING = ("iteration", "max_iter", "epoch", "seed", "time_total_s", "training_iteration")


def results_table(trials: list[TrialSummary], metric: str, mode: str, best: TrialSummary | None) -> str:
    """A markdown table: one row per trial (parameters, the metric, progress, time, status)."""
    keys, _ = _columns(trials, metric)
    header = ["trial", *keys, metric, "iterations", "evaluations", "time (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        m = t.metrics
        iters = f"{m['iteration']}/{m['max_iter']}" if "iteration" in m else ""
        name = f"{t.trial_id} (best)" if t is best else t.trial_id
        cells = [name, *(_cell(t.values.get(k, "")) for k in keys), _cell(m.get(metric, "")), iters,
                 _cell(m.get("training_iteration", "")), _cell(m.get("time_total_s", "")),
                 t.status + (f": {t.error}" if t.error else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_csv(trials: list[TrialSummary], metric: str) -> str:
    """One row per trial: id, status, parameters, every last reported metric, iterations, wall time."""
    keys, metric_cols = _columns(trials, metric)
    header = ["trial", "status", *keys, *metric_cols, "iteration", "max_iter", "evaluations", "time_total_s",
              "seed", "error"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for t in trials:
        m = t.metrics
        writer.writerow([t.trial_id, t.status, *(_csv_value(t.values.get(k, "")) for k in keys),
                         *(m.get(k, "") for k in metric_cols), m.get("iteration", ""), m.get("max_iter", ""),
                         m.get("training_iteration", ""), m.get("time_total_s", ""), m.get("seed", ""), t.error])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, (list, dict)) else value


def best_config(base: CfgNode, space: SearchSpace, best: TrialSummary, output_dir: str) -> CfgNode:
    """The base config with the best trial's values and seed: ``omnireid train`` reproduces the trial."""
    cfg = base.clone().defrost()
    cfg.merge_from_dict(nest({**space.fixed, **best.values}), source=f"trial {best.trial_id}")
    cfg.SEED = int(best.metrics["seed"])
    cfg.OUTPUT_DIR = output_dir
    return cfg


def write_best_config(path: str, cfg: CfgNode, best: TrialSummary, metric: str, workers: int, threads: int) -> None:
    """``cfg`` with a header saying how the trial ran: on CPU, results depend on the thread count too."""
    launch = "omnireid train" if workers == 1 else f"torchrun --nproc_per_node {workers} -m omnireid train"
    header = (f"# Best trial of `omnireid tune`: {best.trial_id}, {metric} = {best.metrics[metric]:.4f}\n"
              f"# Retrain it exactly (the trial's processes and CPU threads): OMP_NUM_THREADS={threads} "
              f"{launch} --config-file {os.path.basename(path)}\n")
    atomic_write_text(path, header + cfg.dump())


def plot_history(path: str, trials: list[TrialSummary], metric: str) -> None:
    """PNG: the metric after each evaluation against the trial's training time, one line per trial."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for t in trials:
        if t.history:
            seconds, values = zip(*t.history)
            ax.plot(seconds, values, marker="o", label=f"{t.trial_id} ({t.status})")
    ax.set_xlabel("training time of the trial (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} after each evaluation")
    ax.grid(alpha=0.3)
    if any(t.history for t in trials):
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
