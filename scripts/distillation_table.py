"""Regenerate the results table of docs/distillation.md from the commands printed beside it.

    python scripts/distillation_table.py --work-dir WORK [--seeds 0 1 2 3 4] [--variants ...] [--jobs 2] [--write-doc]

Writes the synthetic data (Market-1501 layout, 150 training / 100 test identities, 4 cameras, seed 0)
into ``WORK/data``, trains the ResNet-34 teacher once (seed 0), then for every seed the ResNet-18
student alone and four distillation variants, each with ``omnireid train`` in a subprocess
(``OMP_NUM_THREADS=1``). Runs whose ``model_final.pth`` exists are not trained again. Prints the
markdown table (final evaluation of each run, Rank-1 / mAP in %); ``--variants`` picks rows (the student
alone is always run: every row is compared with it), ``--jobs`` trains that many runs at once after the
teacher; ``--write-doc`` replaces the
block between the ``distillation-table`` markers of docs/distillation.md with the commands and the
table, and says which seeds were run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "distillation.md"
BEGIN, END = "<!-- distillation-table:begin -->", "<!-- distillation-table:end -->"
DATA = dict(seed=0, num_train_ids=150, num_test_ids=100, num_cameras=4)

# name -> (label, config, overrides); "{teacher}" is the teacher run folder.
VARIANTS = {
    "student_r18": ("ResNet-18 alone (`Baseline`)", "configs/Distill/demo-student_r18.yml", []),
    "kd_r34-r18": ("`Distiller` (JS-div KD, weight 1)", "configs/Distill/demo-kd_r34-r18.yml", []),
    "overhaul_r34-r18": ("`DistillerOverhaul` (JS-div + overhaul 0.1)", "configs/Distill/demo-kd_r34-r18.yml",
                         ["MODEL.META_ARCHITECTURE", "DistillerOverhaul"]),
    "kd-w4_r34-r18": ("`Distiller`, `KD.LOSS_WEIGHT 4`", "configs/Distill/demo-kd_r34-r18.yml",
                      ["KD.LOSS_WEIGHT", "4.0"]),
    "ema-self_r18": ("`Distiller`, EMA self-teacher only (m 0.99)", "configs/Distill/demo-kd_r34-r18.yml",
                     ["KD.MODEL_CONFIG", "[]", "KD.MODEL_WEIGHTS", "[]", "KD.EMA.ENABLED", "True",
                      "KD.EMA.MOMENTUM", "0.99"]),
}
TEACHER = ("configs/Distill/demo-teacher_r34.yml", "teacher_r34")


def run_dir(work: Path, name: str, seed: int | None = None) -> Path:
    return work / "runs" / (name if seed is None else f"{name}_s{seed}")


def command(config: str, out: Path, work: Path, seed: int, overrides: list[str]) -> list[str]:
    teacher = run_dir(work, TEACHER[1])
    kd = ["KD.MODEL_CONFIG", f"['{teacher / 'config.yaml'}']", "KD.MODEL_WEIGHTS", f"['{teacher / 'model_final.pth'}']"]
    uses_teacher = "demo-kd" in config and "KD.MODEL_CONFIG" not in overrides
    return [sys.executable, "-m", "omnireid", "train", "--config-file", config, "SEED", str(seed),
            "DATASETS.ROOT", str(work / "data"), "OUTPUT_DIR", str(out), *(kd if uses_teacher else []), *overrides]


def train(cmd: list[str], out: Path) -> None:
    if (out / "model_final.pth").exists():
        print(f"[skip] {out} is complete", flush=True)
        return
    print("[run]", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMNIREID_PROGRESS": "0"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def final_metrics(out: Path) -> dict[str, float]:
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    last = max(r["iteration"] for r in records)
    (record,) = [r for r in records if r["iteration"] == last]
    return record


def cell(metrics: dict[str, float]) -> str:
    return f"{metrics['Rank-1']:.1f} / {metrics['mAP']:.1f}"


def table(work: Path, seeds: list[int], variants: list[str]) -> str:
    teacher = final_metrics(run_dir(work, TEACHER[1]))
    head = "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | beats student alone (mAP) |"
    lines = [head, "|---" * (len(seeds) + 3) + "|",
             f"| teacher ResNet-34 ({teacher['iteration']} it, seed 0) | {cell(teacher)} |" + " |" * (len(seeds) + 1)]
    alone = {s: final_metrics(run_dir(work, "student_r18", s)) for s in seeds}
    for name in variants:
        label = VARIANTS[name][0]
        runs = {s: final_metrics(run_dir(work, name, s)) for s in seeds}
        spread = []
        for key in ("Rank-1", "mAP"):
            values = [runs[s][key] for s in seeds]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            spread.append(f"{statistics.mean(values):.1f} ± {std:.1f}")
        wins = "–" if name == "student_r18" else f"{sum(runs[s]['mAP'] > alone[s]['mAP'] for s in seeds)}/{len(seeds)}"
        lines.append(f"| {label} | " + " | ".join(cell(runs[s]) for s in seeds) + f" | {' / '.join(spread)} | {wins} |")
    return "\n".join(lines)


def doc_block(seeds: list[int], variants: list[str], rows: str, data_note: str) -> str:
    seed_list = " ".join(str(s) for s in seeds)
    commands = [
        "```bash",
        f"python scripts/distillation_table.py --work-dir WORK --seeds {seed_list} --variants {' '.join(variants)} "
        "--write-doc",
        "```",
        "",
        "which runs (`WORK` is any folder; `OMP_NUM_THREADS=1`):",
        "",
        "```bash",
        'python -c "from omnireid.data.synthetic import write_synthetic_reid as w; '
        "w('WORK/data/Market-1501-v15.09.15', seed=0, num_train_ids=150, num_test_ids=100, num_cameras=4)\"",
        f"python -m omnireid train --config-file {TEACHER[0]} SEED 0 DATASETS.ROOT WORK/data "
        f"OUTPUT_DIR WORK/runs/{TEACHER[1]}",
        f"for seed in {seed_list}; do",
    ]
    for name in variants:
        _, config, overrides = VARIANTS[name]
        kd = ("KD.MODEL_CONFIG \"['WORK/runs/teacher_r34/config.yaml']\" "
              "KD.MODEL_WEIGHTS \"['WORK/runs/teacher_r34/model_final.pth']\" "
              if "demo-kd" in config and "KD.MODEL_CONFIG" not in overrides else "")
        extra = " ".join(f'"{o}"' if o.startswith("[") else o for o in overrides)
        commands.append(f"  python -m omnireid train --config-file {config} SEED $seed DATASETS.ROOT WORK/data "
                        f"{kd}{extra + ' ' if extra else ''}OUTPUT_DIR WORK/runs/{name}_s$seed")
    commands += ["done", "```"]
    return "\n".join([BEGIN, "", *commands, "", data_note, "", rows, "", END])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, type=Path, help="data and runs go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="table rows (student_r18 is always included)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once after the teacher")
    parser.add_argument("--write-doc", action="store_true", help="replace the table block of docs/distillation.md")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    variants = ["student_r18", *(v for v in args.variants if v != "student_r18")]

    sys.path.insert(0, str(REPO))
    from omnireid.data.synthetic import write_synthetic_reid

    data = work / "data" / "Market-1501-v15.09.15"
    if not data.exists():
        summary = write_synthetic_reid(str(data), **DATA)
        print(f"wrote {summary.num_query_images} query / {summary.num_gallery_images} gallery images", flush=True)
    train(command(TEACHER[0], run_dir(work, TEACHER[1]), work, 0, []), run_dir(work, TEACHER[1]))
    runs = [(name, seed) for seed in args.seeds for name in variants]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # threads only wait for subprocesses
        futures = [pool.submit(train, command(VARIANTS[name][1], run_dir(work, name, seed), work, seed,
                                              VARIANTS[name][2]), run_dir(work, name, seed)) for name, seed in runs]
        for future in futures:
            future.result()
    rows = table(work, args.seeds, variants)
    print(rows)
    if args.write_doc:
        from omnireid.data.datasets import build_dataset
        from omnireid.engine import setup_cfg

        dataset = build_dataset(setup_cfg(None, ["DATASETS.ROOT", str(work / "data")]), "Market1501")
        note = (f"Results on {len(dataset.query)} queries / {len(dataset.gallery)} gallery images, seeds "
                f"{', '.join(map(str, args.seeds))} (Rank-1 / mAP in %, final evaluation of each run), produced by "
                "the commands above at the version of this file.")
        text = DOC.read_text(encoding="utf-8")
        start, end = text.index(BEGIN), text.index(END) + len(END)
        DOC.write_text(text[:start] + doc_block(args.seeds, variants, rows, note) + text[end:], encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
