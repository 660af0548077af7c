"""Peak memory of a fused ensemble evaluation vs one model's evaluation (and a naive dense fusion).

Each case runs in its own subprocess on the same synthetic features (M "models": one identity latent
space seen through M random projections with their own noise, so the models disagree a little and
their fusion helps). Reported per case: the peak RSS *above the RSS with the inputs loaded* during
the evaluation step, the evaluator's input (one model's or the fused features) already in memory
(``/proc/self/clear_refs`` + ``VmHWM``, :class:`omnireid.utils.memory.PeakMemory`,
the method ``omnireid ensemble`` prints), wall time, mAP and Rank-1:

- ``single``: the reid protocol evaluator (``ReidEvaluator.compute``) on model 0's features;
- ``concat`` / ``distance``: the same evaluator on the fused features (omnireid.evaluation.fusion);
- ``dense``: the naive way, each model's full query x gallery matrix, their weighted mean, then ranking.

    python benchmarks/ensemble_memory.py                                  # 3,368 x 15,913 (Market size), 3 models
    python benchmarks/ensemble_memory.py --num-query 200 --num-gallery 1000 --dims 64 32   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CASES = ("single", "concat", "distance", "dense")


def make_models(num_query: int, num_gallery: int, dims: list[int], num_ids: int = 751, latent: int = 32, seed: int = 0):
    """Labels and M feature sets of the same images (float32)."""
    rng = np.random.default_rng(seed)
    n = num_query + num_gallery
    pids = rng.integers(0, num_ids, n)
    camids = rng.integers(0, 6, n)
    centres = rng.standard_normal((num_ids, latent)).astype(np.float32)
    base = centres[pids] + 0.6 * rng.standard_normal((n, latent)).astype(np.float32)
    feats = []
    for dim in dims:
        proj = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
        feats.append(base @ proj + 0.5 * rng.standard_normal((n, dim)).astype(np.float32))
    return feats, pids, camids


def run_case(case: str, args) -> dict:
    import torch

    from omnireid.evaluation import ReidEvaluator, compute_distance, evaluate_rank_metrics, fuse_features
    from omnireid.utils.memory import PeakMemory

    torch.set_num_threads(args.threads)
    feats, pids, camids = make_models(args.num_query, args.num_gallery, args.dims)
    feats = [torch.from_numpy(f) for f in feats]
    pids_t, camids_t = torch.from_numpy(pids), torch.from_numpy(camids)
    weights = [1.0] * len(feats)
    nq = args.num_query
    # the evaluator's input, as `omnireid ensemble` hands it over (fused batch by batch during extraction)
    features = None if case == "dense" else feats[0] if case == "single" else fuse_features(feats, weights, case)
    start = time.perf_counter()
    with PeakMemory() as peak:
        if case == "dense":
            total = sum(w * compute_distance(f[:nq], f[nq:]) for f, w in zip(feats, weights)) / sum(weights)
            metrics = evaluate_rank_metrics(total, pids[:nq], pids[nq:], camids[:nq], camids[nq:],
                                            memory_budget_mb=args.memory_budget_mb).summary()
        else:
            evaluator = ReidEvaluator(nq, memory_budget_mb=args.memory_budget_mb)
            metrics = evaluator.compute({"features": features, "pids": pids_t, "camids": camids_t})
    return {"case": case, "seconds": time.perf_counter() - start, "peak_mb": peak.peak_mb,
            "mAP": metrics["mAP"], "Rank-1": metrics["Rank-1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-query", type=int, default=3368)
    parser.add_argument("--num-gallery", type=int, default=15913)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 2048, 512], help="one feature size per model")
    parser.add_argument("--memory-budget-mb", type=float, default=256, help="TEST.MEMORY_BUDGET_MB of the evaluator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    rows = []
    for case in args.cases.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--case", case] + sys.argv[1:]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    qg_mb = args.num_query * args.num_gallery * 4 / 2**20
    print(f"{args.num_query} queries x {args.num_gallery} gallery, models of dims {args.dims}, "
          f"TEST.MEMORY_BUDGET_MB {args.memory_budget_mb:g}; one float32 q x g matrix = {qg_mb:.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| case | eval peak MB (above inputs) | time (s) | mAP | Rank-1 |\n|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "n/a"
        print(f"| {r['case']} | {peak} | {r['seconds']:.1f} | {r['mAP']:.2f} | {r['Rank-1']:.2f} |")


if __name__ == "__main__":
    main()
