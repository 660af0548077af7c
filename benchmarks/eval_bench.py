"""Evaluation benchmark: time and peak memory of omnireid's evaluation beside references.

    .venv/bin/python benchmarks/eval_bench.py                 # Market-1501 size (3,368 x 15,913, 2048-d)
    .venv/bin/python benchmarks/eval_bench.py --msmt          # MSMT17 size (11,659 x 82,161)
    .venv/bin/python benchmarks/eval_bench.py --million       # faiss top-k on a 1,000,000-image gallery
    .venv/bin/python benchmarks/eval_bench.py --num-query 500 --num-gallery 3000 --dim 256   # any size

Features are synthetic but structured like a trained reID model's: identities (each seen by several
cameras) in a low-dimensional latent space with a per-camera shift and per-image noise, projected to
``--dim`` dimensions, plus distractor images of unseen identities. Every case runs in a fresh
subprocess that loads the cached inputs, runs once, and reports its wall time and its peak RSS
(``getrusage``; the loaded inputs are included, see the "inputs only" row). FastReID 1.4.0 rows
appear when ``fastreid`` is importable (with the shims it needs on current Python/PyTorch).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ----------------------------------------------------------------------------------- data
def make_features(num_query, num_gallery, num_ids, num_cams, dim, latent=32, distractor_frac=0.15, noise=0.65,
                  cam_shift=0.3, seed=0):
    """Query/gallery features, pids and camids; distractors get unique negative pids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, latent)).astype(np.float32)
    cams = (rng.standard_normal((num_cams, latent)) * cam_shift).astype(np.float32)
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    q_pids = rng.integers(0, num_ids, num_query)
    q_cams = rng.integers(0, num_cams, num_query)
    num_distractors = int(num_gallery * distractor_frac)
    g_pids = np.concatenate([rng.integers(0, num_ids, num_gallery - num_distractors),
                             -1 - np.arange(num_distractors)])
    g_cams = rng.integers(0, num_cams, num_gallery)

    def feats(pids, camids):
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), 65536):
            p, c = pids[s : s + 65536], camids[s : s + 65536]
            base = np.where((p >= 0)[:, None], centres[np.maximum(p, 0)],
                            rng.standard_normal((len(p), latent)).astype(np.float32))
            z = base + cams[c] + noise * rng.standard_normal((len(p), latent)).astype(np.float32)
            out[s : s + 65536] = z @ proj + 0.05 * rng.standard_normal((len(p), dim)).astype(np.float32)
        return out

    return feats(q_pids, q_cams), feats(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def write_data(folder, args):
    q, g, qp, gp, qc, gc = make_features(args.num_query, args.num_gallery, args.num_ids, args.num_cams, args.dim,
                                         noise=args.noise)
    np.save(os.path.join(folder, "q.npy"), q)
    np.save(os.path.join(folder, "g.npy"), g)
    np.savez(os.path.join(folder, "ids.npz"), q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc)


# ----------------------------------------------------------------------------------- cases (child side)
def fastreid_shims():
    import collections
    import collections.abc
    import types

    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable"):
        setattr(collections, name, getattr(collections.abc, name))
    sys.modules.setdefault("torch._six", types.SimpleNamespace(string_classes=(str, bytes)))


def load(folder, what):
    out = {}
    if "feats" in what:
        out["q"] = np.load(os.path.join(folder, "q.npy"))
        out["g"] = np.load(os.path.join(folder, "g.npy"))
    if "dist" in what:
        out["dist"] = np.load(os.path.join(folder, "dist.npy"))
    ids = np.load(os.path.join(folder, "ids.npz"))
    out.update({k: ids[k] for k in ids.files})
    return out


def summary(cmc, ap, inp):
    return {"Rank-1": float(cmc[0]) * 100, "mAP": float(np.mean(ap)) * 100, "mINP": float(np.mean(inp)) * 100}


def reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Straightforward per-query stable argsort (the classic definition)."""
    cmcs, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        raw = (g_pids[order][keep] == q_pids[i]).astype(np.int32)
        if not raw.any():
            continue
        cmc = np.minimum(raw.cumsum(), 1)[:max_rank]
        cmcs.append(cmc)
        hits = np.flatnonzero(raw)
        aps.append(np.mean(np.arange(1, len(hits) + 1) / (hits + 1.0)))
        inps.append(len(hits) / (hits[-1] + 1.0))
    return np.mean(np.asarray(cmcs, dtype=np.float32), axis=0), np.asarray(aps), np.asarray(inps)


def prepare_case(case, folder, threads):
    """Load the inputs of ``case``; return (work, to_metrics): ``work()`` is what is timed."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, ROOT)
    from omnireid.evaluation import (
        compute_distance, evaluate_features, evaluate_rank, evaluate_topk, re_ranking_features,
    )

    # same warm-up for every case: thread pool start-up and lazy initialisation are not what we measure
    torch.mm(torch.rand(256, 256), torch.rand(256, 256))
    torch.sort(torch.rand(4096), stable=True)
    no_metrics = lambda result: {}  # noqa: E731
    if case in ("inputs_feats", "inputs_dist"):
        load(folder, "feats" if case == "inputs_feats" else "dist")
        return (lambda: None), no_metrics
    if case == "matmul":
        d = load(folder, "feats")
        q, g = torch.from_numpy(d["q"]), torch.from_numpy(d["g"])
        return (lambda: compute_distance(q, g)), no_metrics
    if case.startswith("topk_"):
        d = load(folder, "feats")
        ids = [d[k] for k in ("q_pids", "g_pids", "q_camids", "g_camids")]
        return (lambda: evaluate_topk(d["q"], d["g"], *ids, k=100, backend=case[len("topk_"):])), (lambda r: r)
    if case == "save_dist":
        d = load(folder, "feats")
        np.save(os.path.join(folder, "dist.npy"), compute_distance(d["q"], d["g"]).numpy())
        return (lambda: None), no_metrics
    d = load(folder, "dist" if case in DIST_CASES else "feats")
    ids = [d[k] for k in ("q_pids", "g_pids", "q_camids", "g_camids")]
    as_metrics = lambda r: summary(*r)  # noqa: E731
    from_final = lambda final: summary(*evaluate_rank(final, *ids))  # noqa: E731
    if case in ("ours_rank", "ours_rank_t2"):
        return (lambda: evaluate_rank(d["dist"], *ids, num_threads=2 if case.endswith("t2") else 1)), as_metrics
    if case == "reference_rank":
        return (lambda: reference_rank(d["dist"], *ids)), as_metrics
    if case in ("fastreid_rank", "fastreid_rank_python"):
        fastreid_shims()
        from fastreid.evaluation.rank import evaluate_rank as fr_rank

        return (lambda: fr_rank(d["dist"], *ids, use_cython=case == "fastreid_rank")), as_metrics
    if case in ("ours_features", "ours_features_roc", "ours_features_t2"):
        def features_metrics(res):
            out = summary(res.cmc, res.all_AP, res.all_INP)
            out.update({k: v * 100 for k, v in res.roc.items()})
            return out

        return (lambda: evaluate_features(d["q"], d["g"], *ids, roc=case.endswith("roc"),
                                          num_threads=2 if case.endswith("t2") else 1)), features_metrics
    if case == "ours_rerank":
        return (lambda: re_ranking_features(d["q"], d["g"], "cosine", 20, 6, 0.3)), from_final
    if case == "fastreid_rerank":
        fastreid_shims()
        from fastreid.evaluation.rerank import re_ranking as fr_rerank

        q, g = torch.from_numpy(d["q"]), torch.from_numpy(d["g"])
        return (lambda: fr_rerank(compute_distance(q, g).numpy(), compute_distance(q, q).numpy(),
                                  compute_distance(g, g).numpy(), 20, 6, 0.3)), from_final
    raise ValueError(f"unknown case {case!r}")


DIST_CASES = {"ours_rank", "ours_rank_t2", "reference_rank", "fastreid_rank", "fastreid_rank_python"}
# cases too slow to repeat
SINGLE_RUN = {"fastreid_rank_python", "fastreid_rerank", "reference_rank"}


def run_case(case, folder, threads, repeat):
    work, to_metrics = prepare_case(case, folder, threads)
    times = []
    for _ in range(1 if case in SINGLE_RUN else repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return times, to_metrics(result)


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (per address space, so nothing inherited from the
    parent across fork/exec), falling back to getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(case, folder, threads, args):
    if case == "write_data":
        write_data(folder, args)
        print("RESULT " + json.dumps({"time": 0.0, "peak_mb": peak_rss_mb(), "metrics": {}}))
        return
    times, metrics = run_case(case, folder, threads, args.repeat)
    print("RESULT " + json.dumps({"time": float(np.median(times)), "times": times, "peak_mb": peak_rss_mb(),
                                  "metrics": metrics}))


# ----------------------------------------------------------------------------------- orchestration
LABELS = {
    "inputs_feats": "inputs only (load features)",
    "inputs_dist": "inputs only (load distance matrix)",
    "matmul": "distance matmul alone (torch, full q x g)",
    "ours_rank": "omnireid evaluate_rank (given distmat)",
    "ours_rank_t2": "omnireid evaluate_rank, ranking kernel on 2 threads (given distmat)",
    "reference_rank": "per-query argsort reference (numpy, given distmat)",
    "fastreid_rank": "FastReID 1.4.0 evaluate_rank, Cython (given distmat)",
    "fastreid_rank_python": "FastReID 1.4.0 evaluate_rank, pure Python (given distmat)",
    "ours_features": "omnireid evaluate_features (features -> metrics)",
    "ours_features_t2": "omnireid evaluate_features, ranking kernel on 2 threads",
    "ours_features_roc": "omnireid evaluate_features + ROC",
    "ours_rerank": "omnireid re-ranking, features -> final q x g (k1=20,k2=6,l=0.3)",
    "fastreid_rerank": "FastReID 1.4.0 distances + re_ranking (k1=20,k2=6,l=0.3)",
    "topk_faiss_flat": "omnireid evaluate_topk, faiss IndexFlat exact, k=100",
    "topk_faiss_ivf": "omnireid evaluate_topk, faiss IVF (nprobe 16), k=100",
    "topk_faiss_hnsw": "omnireid evaluate_topk, faiss HNSW, k=100",
    "topk_torch": "omnireid evaluate_topk, torch exact, k=100",
}


def fastreid_available() -> bool:
    probe = ("import sys; sys.path.insert(0, %r); import eval_bench; eval_bench.fastreid_shims(); "
             "import fastreid.evaluation.rank, fastreid.evaluation.rerank; "
             "from fastreid.evaluation.rank_cylib.rank_cy import evaluate_cy" % HERE)
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def run_child(case, folder, threads, env_extra=None, extra_args=(), repeat=1):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(env_extra or {}))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case, "--data", folder,
                           "--threads", str(threads), "--repeat", str(repeat), *extra_args],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"case {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def load_avg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--msmt", action="store_true", help="MSMT17 size: 11,659 queries x 82,161 gallery")
    parser.add_argument("--million", action="store_true", help="1,000 queries x 1,000,000 gallery (256-d), faiss top-k")
    parser.add_argument("--num-query", type=int, default=3368)
    parser.add_argument("--num-gallery", type=int, default=15913)
    parser.add_argument("--num-ids", type=int, default=751)
    parser.add_argument("--num-cams", type=int, default=6)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--noise", type=float, default=0.65, help="per-image noise (higher = harder features)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median reported; slow cases run once)")
    parser.add_argument("--cases", default="", help="comma-separated subset of: " + ", ".join(LABELS))
    parser.add_argument("--skip-slow", action="store_true", help="skip FastReID pure Python and its re-ranking")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.data, args.threads, args)
        return

    if args.msmt:
        args.num_query, args.num_gallery, args.num_ids, args.num_cams = 11659, 82161, 3060, 15
    if args.million:
        args.num_query, args.num_gallery, args.num_ids, args.dim = 1000, 1_000_000, 20000, 256
    have_fastreid = fastreid_available()
    if args.cases:
        cases = args.cases.split(",")
    elif args.million:
        cases = ["inputs_feats", "topk_faiss_flat", "topk_faiss_ivf", "topk_torch"]
    elif args.msmt:
        cases = ["inputs_feats", "matmul", "ours_features"]
    else:
        cases = ["inputs_feats", "matmul", "ours_features", "ours_features_t2", "ours_features_roc", "inputs_dist",
                 "ours_rank", "ours_rank_t2", "reference_rank", "fastreid_rank", "fastreid_rank_python", "ours_rerank", "fastreid_rerank"]
    if not have_fastreid:
        cases = [c for c in cases if not c.startswith("fastreid")]
    if args.skip_slow:
        cases = [c for c in cases if c not in ("fastreid_rank_python", "fastreid_rerank")]

    header = (f"{args.num_query} queries x {args.num_gallery} gallery, {args.dim}-d, {args.num_ids} ids, "
              f"{args.num_cams} cameras, {args.threads} threads; CPU: {cpu_name()}; "
              f"FastReID {'found' if have_fastreid else 'not installed'}")
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="eval_bench_") as folder:
        t0 = time.perf_counter()
        size_args = ["--num-query", str(args.num_query), "--num-gallery", str(args.num_gallery), "--num-ids",
                     str(args.num_ids), "--num-cams", str(args.num_cams), "--dim", str(args.dim), "--noise",
                     str(args.noise)]
        run_child("write_data", folder, args.threads, extra_args=size_args)  # keeps this process small
        print(f"synthetic data written in {time.perf_counter() - t0:.1f} s", flush=True)
        if any(c in ("inputs_dist", "ours_rank", "reference_rank") or c.startswith("fastreid_rank") for c in cases):
            run_child("save_dist", folder, args.threads)
        for case in cases:
            before = load_avg()
            res = run_child(case, folder, args.threads, repeat=args.repeat)
            rows.append((case, res, before))
            m = res["metrics"]
            shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
            print(f"{LABELS[case]:<70} {res['time']:9.2f} s {res['peak_mb']:9.0f} MB  load {before}  {shown}",
                  flush=True)
    table = format_table(header, rows)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs visible)"
    except OSError:
        pass
    return "unknown"


def format_table(header, rows):
    times = {case: res["time"] for case, res, _ in rows}
    lines = [f"_{header}_", "", "| case | time (s), median | runs (s) | peak RSS (MB) | Rank-1 | mAP | mINP | load avg before |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for case, res, load in rows:
        m = res["metrics"]
        fmt = lambda k: f"{m[k]:.4f}" if k in m else ""  # noqa: E731
        runs = " ".join(f"{t:.2f}" for t in res.get("times", [res["time"]]))
        lines.append(f"| {LABELS[case]} | {res['time']:.2f} | {runs} | {res['peak_mb']:.0f} | {fmt('Rank-1')} | "
                     f"{fmt('mAP')} | {fmt('mINP')} | {load} |")
    ratios = []
    for ours in ("ours_rank", "ours_rank_t2"):
        if ours in times and "fastreid_rank" in times:
            ratios.append(f"{LABELS[ours]}: speed-up vs FastReID Cython {times['fastreid_rank'] / times[ours]:.1f}x")
    if "ours_rank" in times and "reference_rank" in times:
        ratios.append(f"evaluate_rank speed-up vs per-query argsort reference: "
                      f"{times['reference_rank'] / times['ours_rank']:.1f}x")
    for ours in ("ours_features", "ours_features_t2", "ours_features_roc"):
        if ours in times and "matmul" in times:
            ratios.append(f"{LABELS[ours]}: time / matmul alone {times[ours] / times['matmul']:.2f}")
    if "ours_rerank" in times and "fastreid_rerank" in times:
        peak = {case: res["peak_mb"] for case, res, _ in rows}
        ratios.append(f"re-ranking speed-up vs FastReID: {times['fastreid_rerank'] / times['ours_rerank']:.1f}x, "
                      f"peak memory ratio: {peak['ours_rerank'] / peak['fastreid_rerank']:.2f}")
    extra = [f"{LABELS[c]}: " + ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items() if k.startswith(("TPR", "mAP@", "MatchRecall", "Rank-1")))
             for c, res, _ in rows if c.endswith("roc") or c.startswith("topk")]
    return "\n".join(lines + [""] + [f"- {r}" for r in ratios + extra])


if __name__ == "__main__":
    main()
