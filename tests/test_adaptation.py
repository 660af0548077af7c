"""Domain adaptation with pseudo-labels: the shifted synthetic target, Jaccard distances among one set
(against the paper's dense algorithm), DBSCAN on a hand-made matrix, the clustering scores (hand
computed), the pseudo-label relabelling, one tiny `omnireid adapt` round and its one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from omnireid.tasks.adaptation.clustering import ClusterParams, cluster_features, clustering_scores, dbscan
from omnireid.data.datasets import DatasetLayoutError
from omnireid.data.datasets.custom_csv import read_csv_items
from omnireid.tasks.adaptation.datasets import SyntheticShifted, pseudo_label_items, write_pseudo_labels
from omnireid.utils.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def to_csr(dense: np.ndarray, absent: float = 1.0):
    """CSR arrays of the entries of ``dense`` that differ from ``absent`` (the diagonal always kept)."""
    keep = (dense != absent) | np.eye(len(dense), dtype=bool)
    rows, cols = np.nonzero(keep)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))])
    return indptr, cols, dense[rows, cols]


def test_dbscan_on_a_hand_made_matrix():
    # A = {0,1,2,3} within 0.3 of each other; B = {4,5,6} within 0.2; 7 is 0.35 from 6 only (a border point of
    # B: 2 neighbours < min_samples 3); 8 is 0.5 from 0 (beyond eps): an outlier; all else at distance 1.
    d = np.ones((9, 9))
    np.fill_diagonal(d, 0.0)
    for group, dist in (((0, 1, 2, 3), 0.3), ((4, 5, 6), 0.2)):
        for i in group:
            for j in group:
                if i != j:
                    d[i, j] = dist
    d[6, 7] = d[7, 6] = 0.35
    d[0, 8] = d[8, 0] = 0.5
    labels = dbscan(*to_csr(d), eps=0.4, min_samples=3)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, -1]
    # with min_samples 4, B's points have 3 or 4 neighbours: 6 (4, 5, 6, 7) is core, 4 and 5 border
    assert dbscan(*to_csr(d), eps=0.4, min_samples=4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, -1]
    assert dbscan(*to_csr(d), eps=0.4, min_samples=5).tolist() == [-1] * 9
    assert dbscan(*to_csr(d), eps=0.55, min_samples=3).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0]


def test_jaccard_distances_match_the_dense_reference():
    sys.path.insert(0, os.path.dirname(__file__))
    from test_eval_rerank import dense_reference, euclid, features

    from omnireid.evaluation import jaccard_distances

    q, g, *_ = features(5, nq=20, ng=36)
    x = np.concatenate([q, g])
    n = len(x)
    indptr, indices, distances = jaccard_distances(x, metric="euclidean", k1=7, k2=3, memory_budget_mb=0.02)
    dense = np.ones((n, n))
    for i in range(n):
        dense[i, indices[indptr[i]:indptr[i + 1]]] = distances[indptr[i]:indptr[i + 1]]
    assert (distances < 1).all() and np.abs(np.diag(dense)).max() < 1e-6
    # the reference gives the query x gallery block of the set's Jaccard distances (lambda 0): split the
    # set in two in several orders to cover query-query and gallery-gallery pairs too
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = rng.permutation(n)
        a, b = p[:23], p[23:]
        ref = dense_reference(euclid(x[a], x[b]), euclid(x[a], x[a]), euclid(x[b], x[b]), 7, 3, 0.0)
        np.testing.assert_allclose(dense[np.ix_(a, b)], ref, atol=1e-5, rtol=0)


def test_clustering_scores_by_hand():
    # truth [0,0,1,1], clusters [0,0,1,outlier]: the outlier is a cluster of its own. ARI: sum C(n_ij,2) = 1,
    # rows 2, columns 1, expected 2*1/6, max 1.5 -> (1 - 1/3) / (1.5 - 1/3) = 4/7. NMI (arithmetic): MI = ln 2,
    # H(truth) = ln 2, H(clusters) = 1.5 ln 2 -> ln 2 / 1.25 ln 2 = 0.8.
    scores = clustering_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 1, -1]))
    assert scores["ARI"] == pytest.approx(400 / 7)
    assert scores["NMI"] == pytest.approx(80.0)
    assert clustering_scores(np.array([3, 3, 7, 7]), np.array([1, 1, 0, 0])) == pytest.approx({"NMI": 100, "ARI": 100})


def test_cluster_features_finds_blobs_and_drops_outliers():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 16)) * 5
    truth = np.repeat(np.arange(4), 8)
    x = np.concatenate([centres[truth] + 0.3 * rng.standard_normal((32, 16)), 40 * rng.standard_normal((2, 16))])
    labels = cluster_features(torch.from_numpy(x).float(), ClusterParams(k1=7, k2=2, eps=0.6, min_samples=4),
                              metric="euclidean")
    assert (labels[32:] == -1).all()
    assert clustering_scores(truth, labels[:32]) == pytest.approx({"NMI": 100, "ARI": 100})


def test_pseudo_label_items_relabel_and_round_trip(tmp_path):
    items = [{"img_path": f"/d/{i}.jpg", "targets": 100 + i, "camids": i % 3} for i in range(7)]
    out = pseudo_label_items(items, np.array([5, -1, 5, 2, 9, -1, 2]))
    assert [(o["img_path"], o["targets"], o["camids"]) for o in out] == [
        ("/d/0.jpg", 0, 0), ("/d/2.jpg", 0, 2), ("/d/3.jpg", 1, 0), ("/d/4.jpg", 2, 1), ("/d/6.jpg", 1, 0)]
    no_camera = pseudo_label_items([{"img_path": "/a.jpg"}, {"img_path": "/b.jpg"}], [0, 0])
    assert no_camera == [{"img_path": "/a.jpg", "targets": 0, "camids": 0}, {"img_path": "/b.jpg", "targets": 0, "camids": 0}]
    # the round's training list, read back by the CustomCSV dataset's reader
    path = write_pseudo_labels(str(tmp_path / "labels.csv"), out + no_camera)
    assert read_csv_items(path) == out + [dict(item, targets=0) for item in no_camera]
    with pytest.raises(DatasetLayoutError, match="cannot be written to a CSV list"):
        write_pseudo_labels(str(tmp_path / "bad.csv"), [{"img_path": "/d/a,b.jpg", "targets": 0, "camids": 0}])
    with pytest.raises(ValueError, match="3 cluster labels for 2 items"):
        pseudo_label_items(items[:2], [0, 0, 0])


def test_shifted_domain_is_other_people_under_other_cameras(tmp_path):
    from omnireid.data.synthetic import plan_synthetic_reid

    small = dict(num_train_ids=3, num_test_ids=2, num_distractors=0, num_junk=0)
    source_shots, source_ids = plan_synthetic_reid(seed=0, **small)
    shifted_shots, shifted_ids = plan_synthetic_reid(seed=0, domain="shifted", **small)
    assert {s.camera.background for s in source_shots}.isdisjoint({s.camera.background for s in shifted_shots})
    assert [i.attributes() for i in source_ids] != [i.attributes() for i in shifted_ids]
    with pytest.raises(ConfigError, match="unknown synthetic domain 'night'.*source, shifted"):
        plan_synthetic_reid(seed=0, domain="night", **small)


def _cli(argv, cwd):
    env = {**os.environ, "PYTHONPATH": REPO, "OMNIREID_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "omnireid", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def adapt_setup(synthetic_root, tmp_path_factory):
    """The session's tiny source set + a tiny shifted target beside it, and an (untrained) source checkpoint."""
    from omnireid.data.synthetic import write_synthetic_reid
    from omnireid.modeling import build_model

    from conftest import tiny_reid_cfg

    work = tmp_path_factory.mktemp("adapt")
    root = work / "datasets"
    root.mkdir()
    os.symlink(os.path.join(synthetic_root, "Market-1501-v15.09.15"), root / "Market-1501-v15.09.15")
    write_synthetic_reid(str(root / "synthetic-shifted"), seed=0, num_train_ids=8, num_test_ids=5, num_cameras=3,
                         num_distractors=4, num_junk=2, domain="shifted")
    cfg = tiny_reid_cfg(str(root), str(work / "source"), "MODEL.HEADS.NUM_CLASSES", "12")
    torch.manual_seed(0)
    weights = work / "source.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    opts = ["DATASETS.ROOT", str(root), "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
            "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]",
            "INPUT.SIZE_TEST", "[64, 32]", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "16",
            "TEST.IMS_PER_BATCH", "64", "SOLVER.WARMUP_ITERS", "0", "DATASETS.TESTS", "['SyntheticShifted']",
            "MODEL.WEIGHTS", str(weights), "ADAPT.TARGET", "SyntheticShifted"]
    return work, opts


def test_adapt_one_round_end_to_end(adapt_setup):
    work, opts = adapt_setup
    out = work / "run"
    result = _cli(["adapt", *opts, "ADAPT.ROUNDS", "1", "ADAPT.ITERS_PER_ROUND", "2", "ADAPT.EPS", "0.8",
                   "ADAPT.MIN_SAMPLES", "2", "ADAPT.K1", "6", "ADAPT.K2", "2", "OUTPUT_DIR", str(out)], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((out / "adapt_rounds.json").read_text())
    assert [row["round"] for row in rows] == [0, 1]
    target = SyntheticShifted(str(work / "datasets"))
    labels = np.array([int(line.split(",")[1]) for line in
                       (out / "round_1" / "pseudo_labels.csv").read_text().splitlines()[1:]])
    assert rows[1]["clusters"] == len(set(labels)) >= 2 and sorted(set(labels)) == list(range(rows[1]["clusters"]))
    assert rows[1]["outliers"] == len(target.train) - len(labels)
    for row in rows:
        assert 0 <= row["SyntheticShifted/mAP"] <= 100 and 0 <= row["SyntheticShifted/Rank-1"] <= 100
    assert 0 <= rows[1]["NMI"] <= 100 and -100 <= rows[1]["ARI"] <= 100
    assert (out / "round_1" / "model_final.pth").is_file()
    assert "| round | clusters | outliers | NMI | ARI | SyntheticShifted/mAP" in result.stdout


@pytest.mark.parametrize("extra,message", [
    (["ADAPT.TARGET", ""], "ADAPT.TARGET is empty"),
    (["ADAPT.EPS", "1.5"], "ADAPT.EPS must be in (0, 1)"),
    (["MODEL.WEIGHTS", "/nonexistent/source.pth"], "MODEL.WEIGHTS: no such file: /nonexistent/source.pth"),
    (["ADAPT.ROUNDS", "0"], "ADAPT.ROUNDS must be >= 1"),
])
def test_bad_adaptation_configs_are_config_errors(adapt_setup, extra, message):
    from omnireid.config import setup_cfg
    from omnireid.tasks.adaptation.adapt import run_adaptation

    work, opts = adapt_setup
    with pytest.raises((ConfigError, FileNotFoundError), match=message.replace("(", r"\(").replace(")", r"\)")):
        run_adaptation(setup_cfg(None, [*opts, "OUTPUT_DIR", str(work / "bad"), *extra]))


def test_user_errors_are_one_line_exit_2(adapt_setup):
    work, opts = adapt_setup
    cases = [(["adapt", *opts, "ADAPT.MIN_SAMPLES", "0", "OUTPUT_DIR", str(work / "e1")], "ADAPT.MIN_SAMPLES must be >= 1"),
             (["data", "synth", "--domain", "mars", "--out", str(work / "e2")], "unknown synthetic domain 'mars'")]
    for argv, message in cases:
        result = _cli(argv, work)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-3000:]


def test_rounds_table_without_target_labels():
    from omnireid.tasks.adaptation.adapt import format_rounds_table

    # no DATASETS.TESTS and no identities on the target: only the clustering counts
    assert format_rounds_table([{"round": 0}, {"round": 1, "clusters": 3, "outliers": 2}]).splitlines() == [
        "| round | clusters | outliers |", "|---|---|---|", "| 0 |  |  |", "| 1 | 3 | 2 |"]
