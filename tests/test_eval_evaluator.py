"""ReidEvaluator end to end: registry, config, reset/process/evaluate, ordering, ROC/AQE/re-ranking,
and two gloo processes."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from omnireid.config import get_cfg
from omnireid.data import TestSet
from omnireid.evaluation import (
    EVALUATOR_REGISTRY, PROTOCOL_EVALUATORS, ReidEvaluator, average_query_expansion, build_evaluator, evaluate_rank, re_ranking_features,
)
from test_eval_brute_force import brute_rank


def dataset(seed=0, nq=24, ng=96, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    pids = rng.integers(0, 8, nq + ng)
    camids = rng.integers(0, 3, nq + ng)
    feats = (centres[pids] + 0.9 * rng.standard_normal((nq + ng, dim))).astype(np.float32)
    return torch.from_numpy(feats), torch.from_numpy(pids), torch.from_numpy(camids), nq


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - a.astype(np.float64) @ b.astype(np.float64).T


def feed(evaluator, feats, pids, camids, order, batch=10, with_indices=True):
    evaluator.reset()
    for s in range(0, len(order), batch):
        idx = torch.as_tensor(order[s : s + batch])
        batch_dict = {"targets": pids[idx], "camids": camids[idx], "images": None}
        if with_indices:
            batch_dict["indices"] = idx
        evaluator.process(batch_dict, {"features": feats[idx]})


def expected(feats, pids, camids, nq):
    f, p, c = feats.numpy(), pids.numpy(), camids.numpy()
    cmc, ap, inp = brute_rank(cosine(f[:nq], f[nq:]), p[:nq], p[nq:], c[:nq], c[nq:], 50)
    return {"Rank-1": cmc[0] * 100, "Rank-5": cmc[4] * 100, "Rank-10": cmc[9] * 100,
            "mAP": ap.mean() * 100, "mINP": inp.mean() * 100}


def reid_set(num_query, size=None):
    """A reid test set: only its protocol and num_query matter to the evaluator."""
    items = [{"img_path": f"{i}.jpg", "targets": 0, "camids": 0} for i in range(size or num_query + 1)]
    return TestSet("toy", "reid", items, {"num_query": num_query})


def test_registry_and_config():
    cfg = get_cfg()
    assert cfg.TEST.EVALUATOR == "" and "ReidEvaluator" in EVALUATOR_REGISTRY
    assert PROTOCOL_EVALUATORS.get("reid") is ReidEvaluator  # chosen by the test set's protocol
    ev = build_evaluator(cfg, reid_set(5), output_dir=None)
    assert isinstance(ev, ReidEvaluator) and ev.num_query == 5 and ev.metric == "cosine" and ev.rerank is None
    cfg.TEST.RERANK.ENABLED = True
    cfg.TEST.AQE.ENABLED = True
    cfg.TEST.ROC.ENABLED = True
    cfg.TEST.MEMORY_BUDGET_MB = 7
    ev = ReidEvaluator.from_config(cfg, reid_set(5), None)
    assert ev.rerank.k1 == 20 and ev.aqe == {"qe_time": 1, "qe_k": 5, "alpha": 3.0} and ev.roc
    assert ev.memory_budget_mb == 7
    cfg.TEST.METRIC = "cosin"
    with pytest.raises(KeyError, match="TEST.METRIC"):
        build_evaluator(cfg, reid_set(5))
    cfg.TEST.METRIC = "cosine"
    cfg.TEST.EVALUATOR = "ReidEvaluatr"  # an explicit override is looked up by name, typos named
    with pytest.raises(KeyError, match="TEST.EVALUATOR.*Did you mean 'ReidEvaluator'"):
        build_evaluator(cfg, reid_set(5))
    with pytest.raises(KeyError, match="no evaluator for the test protocol 'no-such-protocol'"):
        build_evaluator(get_cfg(), TestSet("x", "no-such-protocol", [], {}))


def test_end_to_end_shuffled_batches_with_indices():
    feats, pids, camids, nq = dataset()
    ev = ReidEvaluator(nq)
    order = np.random.default_rng(1).permutation(len(pids))
    feed(ev, feats, pids, camids, order)
    results = ev.evaluate()
    assert list(results) == ["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"]
    for key, value in expected(feats, pids, camids, nq).items():
        assert isinstance(results[key], float)
        assert results[key] == pytest.approx(value, abs=1e-9)
    # reset forgets everything; without indices the processing order is the dataset order
    feed(ev, feats, pids, camids, np.arange(len(pids)), batch=7, with_indices=False)
    assert ev.evaluate() == pytest.approx(results)


def test_float16_features_and_options():
    feats, pids, camids, nq = dataset(2)
    f, p, c = feats.numpy(), pids.numpy(), camids.numpy()
    cfg = get_cfg()
    cfg.TEST.ROC.ENABLED = True
    ev = build_evaluator(cfg, reid_set(nq))
    feed(ev, feats.half(), pids, camids, np.arange(len(pids)))
    res = ev.evaluate()
    assert {"TPR@FPR=0.0001", "TPR@FPR=0.001", "TPR@FPR=0.01"} <= set(res)
    assert all(0 <= res[k] <= 100 for k in res)
    # AQE + re-ranking: equal to composing the public functions by hand
    cfg.TEST.ROC.ENABLED = False
    cfg.TEST.AQE.ENABLED = True
    cfg.TEST.RERANK.ENABLED = True
    cfg.TEST.RERANK.K1 = 8
    cfg.TEST.RERANK.K2 = 3
    ev = build_evaluator(cfg, reid_set(nq))
    feed(ev, feats, pids, camids, np.arange(len(pids)))
    res = ev.evaluate()
    q, g = average_query_expansion(f[:nq], f[nq:], 1, 5, 3.0)
    dist = re_ranking_features(q, g, "cosine", 8, 3, 0.3)
    cmc, ap, inp = evaluate_rank(dist, p[:nq], p[nq:], c[:nq], c[nq:])
    assert res["mAP"] == pytest.approx(ap.mean() * 100, abs=1e-9)
    assert res["Rank-1"] == pytest.approx(cmc[0] * 100, abs=1e-9)


def test_errors_are_clear():
    feats, pids, camids, nq = dataset()
    ev = ReidEvaluator(nq)
    with pytest.raises(RuntimeError, match="before any process"):
        ev.evaluate()
    ev.process({"targets": pids[:3], "camids": camids[:3]}, {"features": feats[:3]})
    with pytest.raises(ValueError, match="no gallery"):
        ev.evaluate()
    with pytest.raises(ValueError, match="N targets"):
        ev.process({"targets": pids[:3], "camids": camids[:2]}, {"features": feats[:3]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, queue):
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        feats, pids, camids, nq = dataset()
        n = len(pids)
        shard = -(-n // world)
        mine = np.arange(rank * shard, min(n, (rank + 1) * shard))  # the inference sampler's shard
        ev = ReidEvaluator(nq)
        for with_indices in (True, False):
            feed(ev, feats, pids, camids, mine, batch=9, with_indices=with_indices)
            queue.put((rank, with_indices, ev.evaluate()))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_in_dataset_order():
    """Rank r holds the contiguous shard r; with and without per-sample indices."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), queue), nprocs=2, join=True, start_method="spawn")
    results = {(rank, flag): res for rank, flag, res in (queue.get() for _ in range(4))}
    feats, pids, camids, nq = dataset()
    ref = expected(feats, pids, camids, nq)
    assert len(results) == 4
    for res in results.values():
        assert res == pytest.approx(ref, abs=1e-9)
