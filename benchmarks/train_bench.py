"""Training throughput on this CPU: omnireid's training step with each speed option on and off,
beside FastReID 1.4.0's model on the same batch, in the same run.

Step = forward + losses + backward + optimizer step on one fixed batch (P x K identities, default
32 images at 256x128), median wall time over ``--runs`` timed steps after ``--warmup`` steps, the
variants timed round-robin (fair under a fluctuating load). Ratios are FastReID's median over the
variant's (> 1: faster than FastReID). Variants (omnireid, same config file as FastReID's model):

- ``omnireid default``: the shipped defaults (SOLVER.AMP on: bf16 autocast on CPUs with native bf16,
  fp32 elsewhere; MODEL.CHANNELS_LAST auto; SOLVER.OPT_IMPL auto);
- ``bf16 autocast off``, ``channels_last off``, ``optimizer for-loop``: one option switched off, to
  show what it contributes (the autocast row only where the CPU has native bf16);
- ``all off``: all three off (FastReID's execution choices, omnireid's merged parameter groups);
- ``+ compile``: the defaults plus MODEL.COMPILE.ENABLED (``--compile``; compiled before timing).

The whole loop (data loading + step, images/s) runs omnireid's Trainer on the synthetic dataset
(written to a temporary folder) for ``--loop-iters`` iterations after warm-up, default vs all off.

    python benchmarks/train_bench.py                                # BoT-R50 and SBS-R50-ibn, 256x128, batch 32
    python benchmarks/train_bench.py --models bot_R50 --size 64 32 --batch 8 --runs 2 --warmup 1 --loop-iters 2
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
from dataclasses import dataclass
from typing import Any, Callable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from omnireid.config import get_cfg  # noqa: E402
from omnireid.utils.hardware import cpu_has_native_bf16  # noqa: E402

MODELS = {
    "bot_R50": os.path.join(ROOT, "configs", "Market1501", "bagtricks_R50.yml"),
    "sbs_R50-ibn": os.path.join(ROOT, "configs", "Market1501", "sbs_R50-ibn.yml"),
}
# each speed option switched off (omnireid config overrides)
AMP_OFF = ["SOLVER.AMP.ENABLED", "False"]
CHANNELS_LAST_OFF = ["MODEL.CHANNELS_LAST", "false"]
FOR_LOOP = ["SOLVER.OPT_IMPL", "for-loop"]
OFF = AMP_OFF + CHANNELS_LAST_OFF + FOR_LOOP
# FastReID's non-local block has one inner channel (its `reduc_ratio // reduc_ratio`); omnireid's default
# is the paper's in_channels / 2. The benchmark compares the same model, so omnireid builds FastReID's form
# (what `convert-fastreid` and FastReID config files give, too).
SAME_MODEL_AS_FASTREID = ["MODEL.BACKBONE.NL_TYPE", "fastreid_dot_product"]


@dataclass
class Variant:
    name: str
    step: Callable[[], None]


def shared_overrides(args: argparse.Namespace) -> list[str]:
    """Keys both toolboxes read (FastReID's SOLVER.AMP is CUDA-only: it trains in fp32 on CPU)."""
    return ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES",
            str(args.num_classes), "INPUT.SIZE_TRAIN", str(list(args.size)), "SOLVER.IMS_PER_BATCH", str(args.batch),
            "DATALOADER.NUM_INSTANCE", "4"]  # K = 4 as make_batch (SBS: 16)


def make_batch(args: argparse.Namespace) -> dict:
    """P x K identities (K = 4), pixel values 0..255 as both models' preprocessing expects."""
    gen = torch.Generator().manual_seed(0)
    h, w = args.size
    images = torch.randint(0, 256, (args.batch, 3, h, w), generator=gen).float()
    targets = torch.arange(args.batch) // 4 % args.num_classes
    return {"images": images, "targets": targets, "camids": torch.zeros(args.batch, dtype=torch.long)}


def omnireid_step(config_file: str, args: argparse.Namespace, batch: dict, opts: list[str]) -> Callable[[], None]:
    """omnireid's model, optimizer and autocast as its Trainer builds them from the config."""
    from omnireid.engine.trainer import autocast_dtype
    from omnireid.modeling import build_model
    from omnireid.modeling.acceleration import accelerate, mixed_precision
    from omnireid.solver import build_optimizer

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(shared_overrides(args) + SAME_MODEL_AS_FASTREID + opts)
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = accelerate(cfg, build_model(cfg).to(device).train(), device)
    optimizer = build_optimizer(cfg, model)

    dtype = autocast_dtype(cfg, device)
    return training_step(model, optimizer, batch, lambda: mixed_precision("cpu", dtype))


def training_step(model, optimizer, batch: dict, context: Callable[[], Any]) -> Callable[[], None]:
    """One timed step, the same for both toolboxes: forward under ``context()``, sum of losses, backward, update."""
    def step() -> None:
        with context():
            losses = model(batch)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


def fastreid_step(config_file: str, args: argparse.Namespace, batch: dict) -> Callable[[], None] | None:
    """FastReID 1.4.0's model and optimizer (its own build functions) from the same config file."""
    try:
        from fastreid_reference import _install_shims

        _install_shims()
        from fastreid.config import get_cfg as fastreid_get_cfg
        from fastreid.modeling import build_model as fastreid_build_model
        from fastreid.solver import build_optimizer as fastreid_build_optimizer
        from fastreid.utils.events import EventStorage
    except ImportError as exc:
        print(f"note: FastReID is not importable ({exc}); ratios are left out")
        return None
    cfg = fastreid_get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(shared_overrides(args))
    cfg.freeze()
    torch.manual_seed(0)
    model = fastreid_build_model(cfg).train()
    optimizer, _ = fastreid_build_optimizer(cfg, model, contiguous=False)
    storage = EventStorage(0)

    return training_step(model, optimizer, batch, lambda: storage)


def step_variants(model_name: str, args: argparse.Namespace, batch: dict) -> list[Variant]:
    config_file = MODELS[model_name]
    variants = [Variant("omnireid default", omnireid_step(config_file, args, batch, []))]
    if cpu_has_native_bf16():
        variants.append(Variant("bf16 autocast off", omnireid_step(config_file, args, batch, AMP_OFF)))
    else:
        print("note: this CPU has no native bf16 (AVX512-BF16/AMX): the defaults train in fp32 here, "
              "so there is no bf16 autocast row")
    variants += [Variant("channels_last off", omnireid_step(config_file, args, batch, CHANNELS_LAST_OFF)),
                 Variant("optimizer for-loop", omnireid_step(config_file, args, batch, FOR_LOOP)),
                 Variant("all off", omnireid_step(config_file, args, batch, OFF))]
    if args.compile:
        variants.append(Variant(f"+ compile ({args.compile})", omnireid_step(
            config_file, args, batch, ["MODEL.COMPILE.ENABLED", "True", "MODEL.COMPILE.BACKEND", args.compile])))
    reference = fastreid_step(config_file, args, batch)
    if reference is not None:
        variants.append(Variant("FastReID 1.4.0", reference))
    return variants


def time_round_robin(variants: list[Variant], warmup: int, runs: int) -> dict[str, float]:
    for variant in variants:  # warm-up also triggers compilation
        for _ in range(warmup):
            variant.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(runs):
        for variant in variants:
            start = time.perf_counter()
            variant.step()
            times[variant.name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def loop_images_per_second(model_name: str, args: argparse.Namespace, data_root: str, opts: list[str]) -> float:
    """omnireid's Trainer (data + step + hooks) on the synthetic dataset, after warm-up iterations."""
    from omnireid.engine import Trainer, default_setup
    from omnireid.engine.hooks import HookBase

    stamps: list[float] = []

    class Stamp(HookBase):
        def after_step(self) -> None:
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        cfg = get_cfg()
        cfg.merge_from_file(MODELS[model_name])
        cfg.merge_from_list(shared_overrides(args) + opts + [
            "DATASETS.ROOT", data_root, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", str(args.warmup + args.loop_iters),
            "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS",
            str(args.workers), "MODEL.HEADS.NUM_CLASSES", "0"])
        default_setup(cfg)
        trainer = Trainer(cfg)
        trainer.register_hooks([Stamp()])
        trainer.train()
        trainer.release()
    elapsed = stamps[-1] - stamps[args.warmup - 1] if args.warmup else stamps[-1] - stamps[0]
    steps = args.loop_iters if args.warmup else args.loop_iters - 1
    return steps * args.batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--size", nargs=2, type=int, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compile", default="", metavar="BACKEND",
                        help="also time MODEL.COMPILE with this backend (e.g. inductor); slow to compile")
    parser.add_argument("--loop-iters", type=int, default=10, help="0 skips the whole-loop measurement")
    parser.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS of the whole loop")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    if args.batch % 4:
        parser.error("--batch must be a multiple of 4 (P x K with K = 4)")
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
          f"batch {args.batch} at {args.size[0]}x{args.size[1]}, median of {args.runs} steps; "
          f"native bf16: {cpu_has_native_bf16()}")
    batch = make_batch(args)
    results: dict = {"steps": {}, "loop": {}}
    rows = ["| model | variant | step (s) | images/s | vs FastReID |", "|---|---|---|---|---|"]
    for model_name in args.models:
        medians = time_round_robin(step_variants(model_name, args, batch), args.warmup, args.runs)
        results["steps"][model_name] = medians
        reference = medians.get("FastReID 1.4.0")
        for name, seconds in medians.items():
            ratio = f"{reference / seconds:.2f}x" if reference else "n/a"
            rows.append(f"| {model_name} | {name} | {seconds:.3f} | {args.batch / seconds:.1f} | {ratio} |")
    print("\n".join(rows))
    if args.loop_iters > 0:
        from omnireid.data.synthetic import write_synthetic_reid

        with tempfile.TemporaryDirectory() as data_root:
            write_synthetic_reid(os.path.join(data_root, "Market-1501-v15.09.15"), seed=0)
            rows = ["| model | whole loop | images/s | vs all off |", "|---|---|---|---|"]
            for model_name in args.models:
                default = loop_images_per_second(model_name, args, data_root, [])
                off = loop_images_per_second(model_name, args, data_root, OFF)
                results["loop"][model_name] = {"default": default, "all off": off}
                rows.append(f"| {model_name} | omnireid default | {default:.1f} | {default / off:.2f}x |")
                rows.append(f"| {model_name} | all off | {off:.1f} | 1.00x |")
            print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **results}, f, indent=2)


if __name__ == "__main__":
    main()
