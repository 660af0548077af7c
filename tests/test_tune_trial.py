"""A trial is an ordinary training run: its reports, its checkpoints, pausing and resuming it (no Ray here)."""
from __future__ import annotations

import os

import pytest
import torch

from omnireid.engine import seed_everything
from omnireid.evaluation.headline import HEADLINE_METRICS, headline_metric
from omnireid.tune.space import parse_search_space
from omnireid.tune.trial import (MetricNotReported, TrialJob, pack_checkpoint, restore_checkpoint, train_trial,
                                 trial_metrics)
from omnireid.utils.file_io import load_checkpoint_file


class Paused(BaseException):
    """What a scheduler's pause amounts to for the trial: it stops right after a report."""


class CollectingSink:
    """Keeps every report and packs its checkpoint as Ray would receive it; optionally stops after one."""

    def __init__(self, folder: str, values: dict, stop_after: int | None = None) -> None:
        self.folder, self.values, self.stop_after = folder, values, stop_after
        self.reports: list[tuple[dict, str]] = []

    def report(self, metrics: dict, checkpoint_file: str) -> None:
        folder = os.path.join(self.folder, f"checkpoint_{len(self.reports):06d}")
        os.makedirs(folder)
        pack_checkpoint(folder, checkpoint_file, self.values)
        self.reports.append((metrics, folder))
        if len(self.reports) == self.stop_after:
            raise Paused


def final_weights(output_dir: str) -> dict:
    return load_checkpoint_file(os.path.join(output_dir, "model_final.pth"))["model"]


def test_reid_headline_is_the_mean_of_rank1_and_map():
    assert headline_metric("reid")({"Rank-1": 80.0, "mAP": 60.0, "mINP": 1.0}) == 70.0
    assert "reid" in HEADLINE_METRICS


def test_trial_metrics_flatten_and_score_over_test_sets():
    one = trial_metrics({"Market1501": {"Rank-1": 90.0, "mAP": 70.0}}, {"Market1501": "reid"})
    assert one == {"Market1501/Rank-1": 90.0, "Market1501/mAP": 70.0, "Rank-1": 90.0, "mAP": 70.0, "score": 80.0}
    two = trial_metrics({"A": {"Rank-1": 90.0, "mAP": 70.0}, "B": {"Rank-1": 50.0, "mAP": 30.0}},
                        {"A": "reid", "B": "reid"})
    assert two == {"A/Rank-1": 90.0, "A/mAP": 70.0, "B/Rank-1": 50.0, "B/mAP": 30.0, "score": 60.0}


@pytest.fixture
def job_factory(synthetic_root, tmp_path, make_tiny_cfg):
    """A TrialJob over the tiny config (written to a file, as the tune command receives it)."""

    def make(*opts: str, space: dict | None = None, metric: str = "score") -> TrialJob:
        cfg = make_tiny_cfg(synthetic_root, str(tmp_path / "unused"), "SOLVER.MAX_EPOCH", "2",
                            "TEST.EVAL_PERIOD", "1", *opts)
        path = tmp_path / "base.yaml"
        path.write_text(cfg.dump())
        return TrialJob(config_file=str(path), opts=(), space=parse_search_space(space or {"SOLVER.BASE_LR": {
            "loguniform": [1e-3, 1e-1]}}, cfg), workdir=str(tmp_path), experiment_dir=str(tmp_path / "tune"),
            metric=metric)

    return make


def test_paused_and_resumed_trial_equals_uninterrupted(job_factory, tmp_path):
    job = job_factory()
    sampled = {"SOLVER.BASE_LR": 0.02}
    values = job.space.decode(sampled)

    full_cfg = job.trial_config(sampled, "full")
    full = CollectingSink(str(tmp_path / "ray_full"), values)
    train_trial(full_cfg, full, job.metric, resume=False, adopt=False)
    assert [m["iteration"] for m, _ in full.reports] == [5, 10] and full_cfg.SOLVER.BASE_LR == 0.02

    paused_cfg = job.trial_config(sampled, "paused")
    paused = CollectingSink(str(tmp_path / "ray_paused"), values, stop_after=1)
    with pytest.raises(Paused):
        train_trial(paused_cfg, paused, job.metric, resume=False, adopt=False)
    assert not os.path.exists(os.path.join(paused_cfg.OUTPUT_DIR, "model_final.pth"))

    # Resumed from the reported checkpoint alone, in a fresh folder (as on another node), from
    # another process state.
    seed_everything(12345)
    resumed_cfg = job.trial_config(sampled, "resumed")
    assert restore_checkpoint(paused.reports[0][1], resumed_cfg.OUTPUT_DIR, values) is False
    resumed = CollectingSink(str(tmp_path / "ray_resumed"), values)
    train_trial(resumed_cfg, resumed, job.metric, resume=True, adopt=False)

    assert [m["iteration"] for m, _ in resumed.reports] == [10]
    for (a, _), (b, _) in zip(full.reports[1:], resumed.reports):
        assert a == b  # every metric, exactly
    a, b = final_weights(full_cfg.OUTPUT_DIR), final_weights(resumed_cfg.OUTPUT_DIR)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after pause/resume")


def test_checkpoint_from_another_trial_keeps_state_and_takes_own_hyperparameters(job_factory, tmp_path):
    """PBT's exploit step: the donor's weights and position, this trial's learning rate."""
    job = job_factory()
    donor_values = job.space.decode({"SOLVER.BASE_LR": 0.02})
    donor_cfg = job.trial_config({"SOLVER.BASE_LR": 0.02}, "donor")
    donor = CollectingSink(str(tmp_path / "ray_donor"), donor_values, stop_after=1)
    with pytest.raises(Paused):
        train_trial(donor_cfg, donor, job.metric, resume=False, adopt=False)

    own = {"SOLVER.BASE_LR": 0.005}
    cfg = job.trial_config(own, "exploiter")
    assert restore_checkpoint(donor.reports[0][1], cfg.OUTPUT_DIR, job.space.decode(own)) is True
    lrs = []

    class RecordLR(CollectingSink):
        def report(self, metrics, checkpoint_file):
            state = load_checkpoint_file(checkpoint_file)
            lrs.append(state["optimizer"]["param_groups"][0]["initial_lr"])
            super().report(metrics, checkpoint_file)

    sink = RecordLR(str(tmp_path / "ray_exploiter"), job.space.decode(own))
    train_trial(cfg, sink, job.metric, resume=True, adopt=True)
    assert [m["iteration"] for m, _ in sink.reports] == [10]  # went on from the donor's position
    donor_lr = load_checkpoint_file(os.path.join(donor.reports[0][1], "model_0000005.pth"))
    assert donor_lr["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.02)
    assert lrs == [pytest.approx(0.005)]


def test_unknown_metric_stops_the_trial_with_the_reported_keys(job_factory, tmp_path):
    job = job_factory(metric="Rank1")
    cfg = job.trial_config({"SOLVER.BASE_LR": 0.02}, "t")
    with pytest.raises(MetricNotReported, match=r"--metric 'Rank1' is not among the reported metrics: .*Rank-1"):
        train_trial(cfg, CollectingSink(str(tmp_path / "r"), {}), job.metric, resume=False, adopt=False)


def test_negative_seed_becomes_a_fixed_per_trial_seed(job_factory):
    job = job_factory("SEED", "-1")
    a, b = job.trial_config({"SOLVER.BASE_LR": 0.02}, "abc_00000"), job.trial_config({"SOLVER.BASE_LR": 0.02}, "abc_00001")
    assert a.SEED >= 0 and b.SEED >= 0 and a.SEED != b.SEED
    assert job.trial_config({"SOLVER.BASE_LR": 0.02}, "abc_00000").SEED == a.SEED
