"""Regenerate the face distillation table of docs/face.md from the commands printed beside it.

    python scripts/face_distillation_table.py --work-dir WORK [--seeds 0 1] [--write-doc]

Writes the face demo's synthetic data (120 training identities x 16 images, two 600-pair ``.bin``
sets of 120 held-out identities, seed 0) into ``WORK/data``, trains the iResNet teacher once
(seed 0, ``configs/Face/distill-teacher_iresnet.yml``), then for every seed the MobileFaceNet student
alone (``distill-student_mbf.yml``) and distilled from the teacher's margin-free ArcFace logits
(``distill-kd_iresnet-mbf.yml``: ``Distiller``, JS-divergence KD at T = 4), one ``omnireid train`` at
a time in a subprocess. Runs whose final evaluation is in ``metrics.json`` are not trained again. Prints the
markdown table (10-fold verification accuracy of the final evaluation, in %); ``--write-doc``
replaces the block between the ``face-distillation-table`` markers of docs/face.md with the
commands and the table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "face.md"
BEGIN, END = "<!-- face-distillation-table:begin -->", "<!-- face-distillation-table:end -->"
SETS = ("synthetic_frontal", "synthetic_hard")
TEACHER = ("configs/Face/distill-teacher_iresnet.yml", "teacher_iresnet18", "teacher iResNet-18 (width 0.5)")
ROWS = {  # name -> (label, config, uses the teacher)
    "student_mbf": ("MobileFaceNet (width 0.25) alone", "configs/Face/distill-student_mbf.yml", False),
    "kd_iresnet-mbf": ("MobileFaceNet distilled (`Distiller`, KD on margin-free ArcFace logits)",
                       "configs/Face/distill-kd_iresnet-mbf.yml", True),
}


def prepare_data(work: Path) -> None:
    """The face demo's synthetic data (seed 0) in ``work/data``, written once."""
    from omnireid.engine.demo import DEMO_REGISTRY
    from omnireid.tasks.face import demo  # noqa: F401  (registers the face demo)

    DEMO_REGISTRY.get("face").prepare_data(str(work / "data"), 0)


def run_dir(work: Path, name: str, seed: int | None = None) -> Path:
    return work / "runs" / (name if seed is None else f"{name}_s{seed}")


def teacher_overrides(teacher: Path) -> list[str]:
    return ["KD.MODEL_CONFIG", f"['{teacher / 'config.yaml'}']", "KD.MODEL_WEIGHTS", f"['{teacher / 'model_final.pth'}']"]


def complete(out: Path) -> bool:
    """A run is complete once its final evaluation is logged (``model_final.pth`` is written before it)."""
    weights, metrics = out / "model_final.pth", out / "metrics.json"
    if not (weights.exists() and metrics.exists()) or metrics.stat().st_mtime < weights.stat().st_mtime:
        return False
    try:
        final_accuracy(out)
    except SystemExit:
        return False
    return True


def train(config: str, out: Path, work: Path, seed: int, extra: list[str]) -> None:
    if complete(out):
        print(f"[skip] {out} is complete", flush=True)
        return
    cmd = [sys.executable, "-m", "omnireid", "train", "--config-file", config, "SEED", str(seed),
           "DATASETS.ROOT", str(work / "data"), "OUTPUT_DIR", str(out), *extra]
    print("[run]", " ".join(cmd[1:]), flush=True)
    env = {**os.environ, "OMNIREID_PROGRESS": "0"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def final_accuracy(out: Path) -> dict[str, float]:
    """``{verification set: Accuracy}`` of the last evaluation in ``out/metrics.json``."""
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    last = max(r["iteration"] for r in records)
    found = {r["dataset"]: r["Accuracy"] for r in records if r["iteration"] == last and "Accuracy" in r}
    missing = [s for s in SETS if s not in found]
    if missing:
        raise SystemExit(f"{out}/metrics.json has no final Accuracy for {missing}")
    return {"iteration": last, **found}


def cell(acc: dict[str, float]) -> str:
    return " / ".join(f"{acc[s]:.2f}" for s in SETS)


def table(work: Path, seeds: list[int]) -> str:
    teacher = final_accuracy(run_dir(work, TEACHER[1]))
    lines = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | distilled beats alone |",
             "|---" * (len(seeds) + 3) + "|",
             f"| {TEACHER[2]}, {teacher['iteration']} it, seed 0 | {cell(teacher)} |" + " |" * (len(seeds) + 1)]
    results = {name: {s: final_accuracy(run_dir(work, name, s)) for s in seeds} for name in ROWS}
    for name, (label, _, _) in ROWS.items():
        runs = results[name]
        spread = []
        for test in SETS:
            values = [runs[s][test] for s in seeds]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            spread.append(f"{statistics.mean(values):.2f} ± {std:.2f}")
        wins = "–"
        if name != "student_mbf":
            alone = results["student_mbf"]
            wins = ", ".join(f"{sum(runs[s][t] > alone[s][t] for s in seeds)}/{len(seeds)} {t.split('_')[1]}"
                             for t in SETS)
        lines.append(f"| {label} | " + " | ".join(cell(runs[s]) for s in seeds) + f" | {' / '.join(spread)} | {wins} |")
    return "\n".join(lines)


def doc_block(seeds: list[int], rows: str) -> str:
    seed_list = " ".join(str(s) for s in seeds)
    teacher = f"WORK/runs/{TEACHER[1]}"
    kd = f"KD.MODEL_CONFIG \"['{teacher}/config.yaml']\" KD.MODEL_WEIGHTS \"['{teacher}/model_final.pth']\" "
    lines = [BEGIN, "", "```bash", f"python scripts/face_distillation_table.py --work-dir WORK --seeds {seed_list} "
             "--write-doc", "```", "", "which runs (`WORK` is any folder):", "", "```bash",
             "python -c \"import omnireid.tasks.face.demo; from omnireid.engine.demo import DEMO_REGISTRY as R; "
             "R.get('face').prepare_data('WORK/data', 0)\"",
             f"python -m omnireid train --config-file {TEACHER[0]} SEED 0 DATASETS.ROOT WORK/data OUTPUT_DIR {teacher}",
             f"for seed in {seed_list}; do"]
    for name, (_, config, uses_teacher) in ROWS.items():
        lines.append(f"  python -m omnireid train --config-file {config} SEED $seed DATASETS.ROOT WORK/data "
                     f"{kd if uses_teacher else ''}OUTPUT_DIR WORK/runs/{name}_s$seed")
    lines += ["done", "```", "",
              f"10-fold verification accuracy (%) of the final evaluation, `{SETS[0]} / {SETS[1]}`:", "", rows, "", END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, type=Path, help="data and runs go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--write-doc", action="store_true", help="replace the table block of docs/face.md")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    sys.path.insert(0, str(REPO))
    prepare_data(work)
    teacher = run_dir(work, TEACHER[1])
    train(TEACHER[0], teacher, work, 0, [])
    for seed in args.seeds:
        for name, (_, config, uses_teacher) in ROWS.items():
            train(config, run_dir(work, name, seed), work, seed, teacher_overrides(teacher) if uses_teacher else [])
    rows = table(work, args.seeds)
    print(rows)
    if args.write_doc:
        text = DOC.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{DOC} has no {BEGIN} ... {END} block")
        head, rest = text.split(BEGIN, 1)
        DOC.write_text(head + doc_block(args.seeds, rows) + rest.split(END, 1)[1], encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
