"""Gallery search service under load, on loopback only: HTTP throughput and latency, and index search at scale.

Part 1 (HTTP): a ResNet-18 of the demo recipe (128x64, random weights) exported to ONNX by omnireid's
exporter, a gallery of synthetic reID images indexed with it, and a real ``omnireid serve`` process
on 127.0.0.1. An async httpx client sends ``POST /search`` (one JPEG, k=10) from 1, 8 and 32
concurrent clients, each level bounded by ``--requests`` and ``--seconds``. Baseline in the same
run: the same ONNX model called directly, one image per call (what a server without micro-batching
could at best do), so the table shows the batching gain as a ratio.

Part 2 (index): ``--vectors`` random unit vectors (default 1,000,000 x 256) in each index kind
(flat = exact, ivf, hnsw); search-only latency and throughput from 1, 8 and 32 threads calling
``GalleryIndex.search`` (k=10) with random queries, the build time, and recall@10 against exact
search on the same queries.

    python benchmarks/serve_bench.py                                   # the figures (~30-40 min on 2 cores)
    python benchmarks/serve_bench.py --gallery 40 --requests 24 --vectors 20000 --seconds 10   # smoke test
    python benchmarks/serve_bench.py --skip-http --kinds flat hnsw --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TOKEN = "serve-bench-token-0123456789"
LEVELS = (1, 8, 32)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


# ------------------------------------------------------------------------------------------------
# part 1: HTTP
# ------------------------------------------------------------------------------------------------
def export_demo_model(folder: str, size: tuple[int, int]) -> str:
    import torch

    from omnireid.config import get_cfg
    from omnireid.export import ExportOptions, deploy_copy
    from omnireid.export.base import get_exporter
    from omnireid.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Demo", "synthetic_R18.yml"))
    cfg.merge_from_list(["MODEL.HEADS.NUM_CLASSES", "200", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    deployed, _ = deploy_copy(build_model(cfg).eval())
    os.makedirs(folder, exist_ok=True)
    get_exporter("onnx").export(deployed, ExportOptions(input_size=size, batch_size=8), folder)
    return os.path.join(folder, "model.onnx")


def write_gallery(folder: str, count: int) -> list[str]:
    from omnireid.export.parity import synthetic_images

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(synthetic_images(count, seed=0)):
        path = os.path.join(folder, f"{i:05d}.jpg")
        image.save(path, quality=90)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, artifact: str, port: int, log: str, max_batch: int) -> subprocess.Popen:
    env = {**os.environ, "OMNIREID_SERVE_TOKEN": TOKEN, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "omnireid", "serve", "--index", index, "--artifact", artifact,
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                             "--max-batch", str(max_batch)],
                            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not start")


async def load_level(url: str, bodies: list[bytes], clients: int, total: int, seconds: float) -> dict:
    """``clients`` workers POST /search until ``total`` requests are done or ``seconds`` have passed."""
    import httpx

    latencies: list[float] = []
    errors = 0
    issued = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    deadline = float("inf")

    async def post(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
        return await client.post(url + "/search", headers=headers, files={"image": ("q.jpg", body)},
                                 data={"k": "10"})

    async def worker(client: httpx.AsyncClient, seed: int) -> None:
        nonlocal issued, errors
        n = seed
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            body = bodies[n % len(bodies)]
            n += clients
            start = time.perf_counter()
            response = await post(client, body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*[post(client, bodies[0]) for _ in range(clients)])  # warm-up: open the connections
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*[worker(client, i) for i in range(clients)])
        wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": wall,
            "throughput": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99)}


def direct_model_baseline(artifact: str, bodies: list[bytes], runs: int) -> float:
    """Images/s of the ONNX model called with one preprocessed image at a time (decode included)."""
    from omnireid.serve.encoder import ImageEncoder, decode_image

    encoder = ImageEncoder.from_artifact(artifact)
    for body in bodies[:2]:
        encoder(encoder.prepare(decode_image(body, 10**8))[None])
    start = time.perf_counter()
    for i in range(runs):
        encoder(encoder.prepare(decode_image(bodies[i % len(bodies)], 10**8))[None])
    return runs / (time.perf_counter() - start)


def bench_http(args, workdir: str) -> dict:
    from omnireid.serve.encoder import ImageEncoder
    from omnireid.serve.index import GalleryIndex

    size = (128, 64)
    artifact = export_demo_model(os.path.join(workdir, "onnx"), size)
    paths = write_gallery(os.path.join(workdir, "gallery"), args.gallery)
    encoder = ImageEncoder.from_artifact(artifact)
    from omnireid.cli.extract import extract_features

    features = extract_features(encoder.predictor, paths, encoder.transform, 32)
    index_dir = os.path.join(workdir, "index")
    GalleryIndex.create(index_dir, features, [os.path.basename(p) for p in paths], info=encoder.describe()).close()
    bodies = []
    for path in paths[: min(64, len(paths))]:
        with open(path, "rb") as f:
            bodies.append(f.read())
    baseline = direct_model_baseline(artifact, bodies, runs=max(10, min(100, args.requests)))
    print(f"direct ONNX model, one image per call: {baseline:.1f} images/s", flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(index_dir, artifact, port, os.path.join(workdir, "server.log"), args.max_batch)
    rows = []
    try:
        wait_healthy(url, server)
        for clients in LEVELS:
            load = load_average()
            row = asyncio.run(load_level(url, bodies, clients, args.requests, args.seconds))
            row.update(vs_direct=row["throughput"] / baseline, load=load)
            rows.append(row)
            print(f"  {clients:3d} clients: {row['throughput']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                  f"p99 {row['p99_ms']:7.1f} ms  ({row['requests']} requests, {row['errors']} errors, "
                  f"x{row['vs_direct']:.2f} vs direct)", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    return {"gallery": args.gallery, "direct_images_per_s": baseline, "max_batch": args.max_batch, "levels": rows}


# ------------------------------------------------------------------------------------------------
# part 2: index search at scale
# ------------------------------------------------------------------------------------------------
def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def search_level(index, queries: np.ndarray, threads: int, total: int, seconds: float) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            start = time.perf_counter()
            index.search(queries[i % len(queries)][None], 10)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    return {"threads": threads, "searches": len(latencies), "throughput": len(latencies) / wall,
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99)}


def bench_index(args, workdir: str) -> list[dict]:
    from omnireid.serve.index import GalleryIndex

    vectors = random_unit(args.vectors, args.dim, seed=0)
    queries = random_unit(max(args.queries, 1), args.dim, seed=1)
    exact = None
    results = []
    for kind in args.kinds:
        params = {"ivf": {"nprobe": args.nprobe}, "hnsw": {"ef_search": args.ef_search}}.get(kind, {})
        root = os.path.join(workdir, f"index-{kind}")
        start = time.perf_counter()
        index = GalleryIndex.create(root, vectors, [str(i) for i in range(len(vectors))], kind=kind, params=params)
        build_s = time.perf_counter() - start
        found = [[int(h.id) for h in hits] for hits in index.search(queries, 10)]
        if exact is None:
            exact = exact_top10(vectors, queries) if kind != "flat" else found
        recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
        row = {"kind": kind, "vectors": len(vectors), "dim": args.dim, "params": index.kind.params,
               "build_s": build_s, "recall_at_10": recall, "levels": []}
        for threads in LEVELS:
            level = search_level(index, queries, threads, args.searches, args.seconds)
            level["load"] = load_average()
            row["levels"].append(level)
            print(f"  {kind:5s} {threads:3d} threads: {level['throughput']:8.1f} searches/s  p50 "
                  f"{level['p50_ms']:8.2f} ms  p99 {level['p99_ms']:8.2f} ms  recall@10 {recall:.3f}  "
                  f"(build {build_s:.0f} s)", flush=True)
        index.close(compact=False)
        results.append(row)
    flat = next((r for r in results if r["kind"] == "flat"), None)
    for row in results:
        for level, flat_level in zip(row["levels"], flat["levels"] if flat else [None] * len(LEVELS)):
            level["vs_flat"] = level["throughput"] / flat_level["throughput"] if flat_level else float("nan")
    return results


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> list[list[int]]:
    out = []
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ vectors.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out.extend(np.take_along_axis(top, order, axis=1).tolist())
    return out


# ------------------------------------------------------------------------------------------------
def markdown(http: dict | None, index_rows: list[dict]) -> str:
    lines = []
    if http:
        lines += [f"HTTP `POST /search` (k=10, one JPEG), ResNet-18 128x64 ONNX, gallery of {http['gallery']} images, "
                  f"micro-batches of up to {http['max_batch']}; direct model, one image per call: "
                  f"{http['direct_images_per_s']:.1f} images/s", "",
                  "| clients | requests | req/s | p50 (ms) | p99 (ms) | vs direct model calls | errors | load avg |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in http["levels"]:
            lines.append(f"| {r['clients']} | {r['requests']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['vs_direct']:.2f}x | {r['errors']} | {r['load']} |")
        lines.append("")
    if index_rows:
        lines += ["| index | vectors | params | build (s) | recall@10 | threads | searches/s | p50 (ms) | p99 (ms) "
                  "| vs flat | load avg |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in index_rows:
            for level in row["levels"]:
                lines.append(f"| {row['kind']} | {row['vectors']:,} x {row['dim']} | {row['params']} | "
                             f"{row['build_s']:.0f} | {row['recall_at_10']:.3f} | {level['threads']} | "
                             f"{level['throughput']:.1f} | {level['p50_ms']:.2f} | {level['p99_ms']:.2f} | "
                             f"{level['vs_flat']:.2f}x | {level['load']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=1000, help="images in the served gallery")
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level (bound)")
    parser.add_argument("--seconds", type=float, default=60, help="time per level (bound)")
    parser.add_argument("--max-batch", type=int, default=32, help="the server's micro-batch bound")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="vectors in the large index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200, help="distinct random queries (recall is over them)")
    parser.add_argument("--searches", type=int, default=2000, help="searches per thread level (bound)")
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=("flat", "ivf", "hnsw"))
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as workdir:
        http = None if args.skip_http else bench_http(args, workdir)
        index_rows = [] if args.skip_index else bench_index(args, workdir)
    table = markdown(http, index_rows)
    print("\n" + table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"http": http, "index": index_rows, "argv": sys.argv[1:]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
