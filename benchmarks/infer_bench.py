"""Inference throughput on this CPU: PyTorch eager vs TorchScript vs ONNX Runtime vs OpenVINO.

Same model instance (random weights, eval mode, BN statistics randomised) exported to every format by
omnireid's exporters; each runtime is loaded through ``omnireid.inference.Predictor`` (OpenVINO also
with its default CPU precision, bf16 where the CPU has it, reported as a separate row). Images/s is
batch size / median wall time of a forward pass over ``--runs`` runs after warm-up, the runtimes
timed round-robin (fair under a fluctuating load).

    python benchmarks/infer_bench.py                       # ResNet-50 and ResNet-18, 256x128, batch 1 and 32
    python benchmarks/infer_bench.py --models resnet18 --batches 1 8 --runs 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnireid.config import get_cfg  # noqa: E402
from omnireid.export import ExportOptions, deploy_copy  # noqa: E402
from omnireid.export.base import get_exporter  # noqa: E402
from omnireid.inference import Predictor  # noqa: E402

MODELS = {
    "resnet50": ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048"],
    "resnet50-ibn": ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048",
                     "MODEL.BACKBONE.WITH_IBN", "True"],
    "resnet18": ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512"],
    "osnet_x1_0": ["MODEL.BACKBONE.NAME", "build_osnet_backbone", "MODEL.BACKBONE.FEAT_DIM", "512"],
}


def build(name: str, size: tuple[int, int]) -> torch.nn.Module:
    from omnireid.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                                     "Base-bagtricks.yml"))
    cfg.merge_from_list(MODELS[name] + ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "751",
                                        "INPUT.SIZE_TEST", str(list(size)), "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 0.5 + 0.75)
    return model


def interleaved_medians(calls: dict, runs: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call, timing the runtimes round-robin so that load changes on a shared
    machine hit all of them alike."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {label: [] for label in calls}
    for _ in range(runs):
        for label, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def bench_model(name: str, size: tuple[int, int], batches: list[int], runs: int, threads: int,
                workdir: str) -> list[dict]:
    model = build(name, size)
    deployed, _ = deploy_copy(model)
    options = ExportOptions(input_size=size, batch_size=max(batches))
    runtimes: dict[str, Predictor] = {}
    for format_name, label, filename, kwargs in (
            ("torchscript", "torchscript", "model.ts", {}),
            ("onnx", "onnx runtime", "model.onnx", {"intra_op_threads": threads}),
            ("openvino", "openvino", "model.xml", {"inference_precision": "f32", "num_threads": threads})):
        folder = os.path.join(workdir, name, format_name)
        os.makedirs(folder, exist_ok=True)
        get_exporter(format_name).export(deployed, options, folder)
        runtimes[f"{label} (fp32)"] = Predictor.from_artifact(os.path.join(folder, filename), **kwargs)
    runtimes["openvino (CPU default precision)"] = Predictor.from_artifact(
        os.path.join(workdir, name, "openvino", "model.xml"), inference_precision=None, num_threads=threads)
    rows = []
    generator = torch.Generator().manual_seed(1)
    for batch in batches:
        images = torch.randint(0, 256, (batch, 3, *size), generator=generator, dtype=torch.uint8)
        floats = images.float()
        with torch.no_grad():
            reference = model(floats).numpy()

        def eager():
            with torch.no_grad():
                return model(floats)

        calls = {"pytorch eager (fp32)": eager}
        calls.update({label: (lambda p=predictor: p(images)) for label, predictor in runtimes.items()})
        seconds = interleaved_medians(calls, runs)
        eager_s = seconds["pytorch eager (fp32)"]
        for label, value in seconds.items():
            diff = 0.0 if label not in runtimes else float(np.abs(runtimes[label](images) - reference).max())
            rows.append({"model": name, "batch": batch, "runtime": label, "images_per_s": batch / value,
                         "speedup": eager_s / value, "max_abs_diff": diff})
            row = rows[-1]
            print(f"  {row['model']:12s} batch {row['batch']:3d}  {row['runtime']:34s} "
                  f"{row['images_per_s']:8.1f} img/s  x{row['speedup']:.2f}  max|diff| {row['max_abs_diff']:.2e}",
                  flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | batch | runtime | images/s | vs eager | max abs diff vs eager |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['runtime']} | {r['images_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50", "resnet18"], choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--size", nargs=2, type=int, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per (model, batch, runtime)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime
    import openvino

    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
               "python": platform.python_version(),
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": openvino.get_version(),
               "load_average_at_start": os.getloadavg()}
    print(json.dumps(machine), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="omnireid-bench-") as workdir:
        for name in args.models:
            rows += bench_model(name, tuple(args.size), args.batches, args.runs, args.threads, workdir)
    machine["load_average_at_end"] = os.getloadavg()
    print()
    print(markdown(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
