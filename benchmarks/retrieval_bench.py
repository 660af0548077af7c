"""Retrieval metrics benchmark: omnireid's ``evaluate_retrieval`` beside pytorch-metric-learning's
``AccuracyCalculator`` on the same embeddings, in one run.

    .venv/bin/python benchmarks/retrieval_bench.py                      # Stanford Online Products size: 60,502 x 512
    .venv/bin/python benchmarks/retrieval_bench.py --num-items 3000 --repeat 1    # smoke test

Embeddings are synthetic but shaped like a trained model's on SOP's test split: 11,316 classes of 2 to
12 images (60,502 in all), class centres in a 64-d latent space plus per-image noise, projected to
``--dim`` dimensions and L2-normalised (so the squared L2 distance of pytorch-metric-learning's default
faiss ``IndexFlatL2`` and our cosine distance order neighbours alike). Metrics: Recall@K for
``--ks`` (SOP's 1, 10, 20, 30 by default), R-Precision, MAP@R. pytorch-metric-learning has no
Recall@K beyond ``precision_at_1``; the reference adds it the way its docs describe (a
``calculate_recall_at_<K>`` method on a subclass, reading its own k-NN labels), with
``k = max(--ks)`` neighbours (>= the largest class, so its R-Precision / MAP@R are exact).

Every case runs in a fresh subprocess that loads the cached embeddings, warms up, runs the work
``--repeat`` times and reports the median wall time, the process CPU time and its peak RSS (VmHWM,
which includes torch and the loaded embeddings: see the "inputs only" row).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from eval_bench import cpu_name, load_avg, peak_rss_mb  # noqa: E402

SOP_ITEMS, SOP_CLASSES = 60502, 11316


# ----------------------------------------------------------------------------------- data
def class_sizes(num_items: int, num_classes: int, rng: np.random.Generator, low: int = 2, high: int = 12) -> np.ndarray:
    """``num_classes`` sizes in ``[low, high]`` summing to ``num_items`` (SOP: 2-12 images per product)."""
    if not low * num_classes <= num_items <= high * num_classes:
        raise ValueError(f"{num_items} items cannot fill {num_classes} classes of {low}-{high} items")
    sizes = np.full(num_classes, low)
    extra = num_items - sizes.sum()
    while extra > 0:
        room = np.flatnonzero(sizes < high)
        pick = rng.choice(room, size=min(extra, len(room)), replace=False)
        sizes[pick] += 1
        extra -= len(pick)
    return sizes


def make_embeddings(num_items: int, num_classes: int, dim: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), class_sizes(num_items, num_classes, rng))
    labels = labels[rng.permutation(num_items)]
    latent = 64
    centres = rng.standard_normal((num_classes, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    z = centres[labels] + noise * rng.standard_normal((num_items, latent)).astype(np.float32)
    x = z @ proj + 0.05 * rng.standard_normal((num_items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


# ----------------------------------------------------------------------------------- cases (child side)
def pml_calculator(ks: list[int]):
    """pytorch-metric-learning's AccuracyCalculator plus Recall@K read from its own k-NN labels."""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    def recall_method(k: int):
        def calculate(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
            knn_labels, query_labels = knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]
            hit = (knn_labels[:, :k] == query_labels[:, None]).any(dim=1)
            return hit.double().mean().item()

        return calculate

    methods = {f"calculate_recall_at_{k}": recall_method(k) for k in ks}
    methods["requires_knn"] = lambda self: AccuracyCalculator.requires_knn(self) + [f"recall_at_{k}" for k in ks]
    calculator_cls = type("RecallAccuracyCalculator", (AccuracyCalculator,), methods)
    include = tuple(f"recall_at_{k}" for k in ks) + ("r_precision", "mean_average_precision_at_r")
    return calculator_cls(include=include, k=max(ks), device=torch.device("cpu"))


def pml_summary(res: dict, ks: list[int]) -> dict[str, float]:
    out = {f"Recall@{k}": res[f"recall_at_{k}"] * 100 for k in ks}
    out["R-Precision"] = res["r_precision"] * 100
    out["MAP@R"] = res["mean_average_precision_at_r"] * 100
    return out


def prepare_case(case: str, folder: str, threads: int, ks: list[int]):
    """Load the inputs; return (work, to_metrics): ``work()`` is what is timed."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, ROOT)
    from omnireid.evaluation.retrieval import evaluate_retrieval

    torch.mm(torch.rand(256, 256), torch.rand(256, 256))  # same warm-up for every case
    x = np.load(os.path.join(folder, "x.npy"))
    labels = np.load(os.path.join(folder, "labels.npy"))
    if case == "inputs":
        return (lambda: None), (lambda r: {})
    if case in OURS:
        return (lambda: evaluate_retrieval(x, labels, recall_ks=ks, **OURS[case])), \
            (lambda r: {k: v for k, v in r.summary().items() if k != "SkippedQueries"})
    if case == "ours_faiss":
        return (lambda: evaluate_retrieval(x, labels, recall_ks=ks, backend="faiss_flat")), \
            (lambda r: {k: v for k, v in r.summary().items() if k != "SkippedQueries"})
    if case == "pml":
        calc = pml_calculator(ks)
        return (lambda: calc.get_accuracy(x, labels)), (lambda r: pml_summary(r, ks))
    raise ValueError(f"unknown case {case!r}")


def child_main(args) -> None:
    ks = [int(k) for k in args.ks.split(",")]
    if args.child == "write_data":
        x, labels = make_embeddings(args.num_items, args.num_classes, args.dim, args.noise)
        np.save(os.path.join(args.data, "x.npy"), x)
        np.save(os.path.join(args.data, "labels.npy"), labels)
        print("RESULT " + json.dumps({"time": 0.0, "cpu": 0.0, "peak_mb": peak_rss_mb(), "metrics": {}}))
        return
    work, to_metrics = prepare_case(args.child, args.data, args.threads, ks)
    times, cpus = [], []
    for _ in range(args.repeat):
        start, cpu0 = time.perf_counter(), time.process_time()
        result = work()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu0)
    print("RESULT " + json.dumps({"time": float(np.median(times)), "times": times, "cpu": float(np.median(cpus)),
                                  "peak_mb": peak_rss_mb(), "metrics": to_metrics(result)}))


# ----------------------------------------------------------------------------------- orchestration
# evaluate_retrieval options per case: the default (bfloat16-screened tiles where the CPU has the
# instructions, the selection on the torch threads like the GEMMs), the selection on one thread, and
# float32 tiles without screening (the default before the screen)
OURS = {"ours": {}, "ours_t1": {"num_threads": 1}, "ours_fp32": {"screen": False}}
LABELS = {
    "inputs": "inputs only (load embeddings)",
    "ours": "omnireid evaluate_retrieval (exact, torch, default)",
    "ours_t1": "omnireid evaluate_retrieval, selection on 1 thread",
    "ours_fp32": "omnireid evaluate_retrieval, float32 tiles (no bfloat16 screen)",
    "ours_faiss": "omnireid evaluate_retrieval, faiss IndexFlat search",
    "pml": "pytorch-metric-learning AccuracyCalculator (faiss IndexFlatL2)",
}


def run_child(case: str, folder: str, args, extra: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case, "--data", folder,
                           "--threads", str(args.threads), "--repeat", str(args.repeat), "--ks", args.ks, *extra],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"case {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def format_table(header: str, rows: list[tuple[str, dict, str]], ks: list[int]) -> str:
    names = [f"Recall@{k}" for k in ks] + ["R-Precision", "MAP@R"]
    lines = [f"_{header}_", "",
             "| case | time (s), median | CPU time (s) | peak RSS (MB) | " + " | ".join(names) + " | load avg before |",
             "|---|---:|---:|---:|" + "---:|" * len(names) + "---|"]
    for case, res, load in rows:
        m = res["metrics"]
        cells = [f"{m[n]:.4f}" if n in m else "" for n in names]
        lines.append(f"| {LABELS[case]} | {res['time']:.2f} | {res['cpu']:.2f} | {res['peak_mb']:.0f} | "
                     + " | ".join(cells) + f" | {load} |")
    by_case = {case: res for case, res, _ in rows}
    notes = []
    if "pml" in by_case:
        ref = by_case["pml"]
        for case in (*OURS, "ours_faiss"):
            if case not in by_case:
                continue
            ours = by_case[case]
            diff = max(abs(ours["metrics"][n] - ref["metrics"][n]) for n in names)
            notes.append(f"{LABELS[case]} vs pytorch-metric-learning: {ref['time'] / ours['time']:.2f}x faster "
                         f"(wall), {ref['cpu'] / ours['cpu']:.2f}x less CPU time, peak RSS {ours['peak_mb']:.0f} MB "
                         f"vs {ref['peak_mb']:.0f} MB, max |metric difference| {diff:.2e} percentage points")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-items", type=int, default=SOP_ITEMS)
    parser.add_argument("--num-classes", type=int, default=0, help="default: SOP's ratio (11,316 for 60,502 items)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=1.0, help="per-image latent noise (higher = harder)")
    parser.add_argument("--ks", default="1,10,20,30", help="Recall@K values (SOP / In-Shop: 1,10,20,30)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median reported)")
    parser.add_argument("--cases", default="inputs,ours,pml", help="comma-separated subset of: " + ", ".join(LABELS))
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.num_classes:
        args.num_classes = max(1, round(args.num_items * SOP_CLASSES / SOP_ITEMS))
    if args.child:
        child_main(args)
        return
    ks = [int(k) for k in args.ks.split(",")]
    header = (f"{args.num_items} items, {args.num_classes} classes, {args.dim}-d, every item a query against all "
              f"others, {args.threads} threads; CPU: {cpu_name()}")
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="retrieval_bench_") as folder:
        size = ["--num-items", str(args.num_items), "--num-classes", str(args.num_classes), "--dim", str(args.dim),
                "--noise", str(args.noise)]
        run_child("write_data", folder, args, size)
        for case in args.cases.split(","):
            before = load_avg()
            res = run_child(case, folder, args, size)
            rows.append((case, res, before))
            shown = ", ".join(f"{k} {v:.4f}" for k, v in res["metrics"].items())
            print(f"{LABELS[case]:<64} {res['time']:8.2f} s {res['cpu']:8.2f} s CPU {res['peak_mb']:7.0f} MB  "
                  f"load {before}  {shown}", flush=True)
    table = format_table(header, rows, ks)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
