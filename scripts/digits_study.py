"""Real-image evidence: ERM, groupDRO, KD and GroupDistil students on handwritten digits with a spurious background.

    python scripts/digits_study.py --out runs/digits_study --seeds 0 1 2 3 4

Writes a Waterbirds-layout dataset of scikit-learn's real handwritten digits
(``python -m mnms_groupdistil.data.synthetic digits``: label = digit >= 5, background agreeing with
the label in 95% of training images, balanced val/test groups), trains one groupDRO ResNet-50 teacher
(seed 0) and, for every seed, four ResNet-18 students through the Waterbirds bundle
(``bundles/waterbirds_groupdistil``, ``ConfigWorkflow``), then prints and writes ``results.md``: test
worst-group and adjusted-average accuracy (mean +- sample std over seeds) and the paired
GroupDistil - KD difference per seed. Finished runs (a ``metrics.json`` with every epoch) are reused.
Runs go to ``--jobs`` worker processes with one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "waterbirds_groupdistil" / "configs"
MODES = ("erm", "groupdro", "kd", "groupdistil")
MODE_CONFIGS = {
    "erm": ["train_erm.json"],
    "groupdro": ["train_groupdro.json"],
    "kd": ["train_kd.json"],
    "groupdistil": [],
}
FIGURES = ("test_worst_group_acc", "test_adjusted_average_acc")


def finished(run_dir: Path, max_epochs: int) -> bool:
    path = run_dir / "metrics.json"
    return path.is_file() and len(json.loads(path.read_text()).get("history", [])) == max_epochs


def train(configs: list[str], overrides: dict[str, Any]) -> float:
    """One bundle run in this process (one torch thread); returns its wall time in seconds."""
    import torch
    from monai.bundle import ConfigWorkflow

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.WARNING)
    start = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), *(str(CONFIGS / c) for c in configs)],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * spread:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/digits_study", help="folder for the dataset, runs and results.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max_epochs", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.001)
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time (one thread each)")
    parser.add_argument(
        "--group_batches",
        action="store_true",
        help="one-group batches (Algorithm 1) for groupDRO / GroupDistil instead of mixed batches",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out).resolve()
    started = time.perf_counter()

    from mnms_groupdistil.data.synthetic import write_digits_waterbirds

    data = out / "data"
    if not (data / "waterbird_complete95_forest2water2" / "metadata.csv").is_file():
        write_digits_waterbirds(data, seed=0)
    common = {
        "dataset_dir": str(data),
        "max_epochs": args.max_epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "num_workers": 0,
        "device": "cpu",
        "select_by": None,  # report the last epoch: nothing is selected, on val or test
        "group_batches": args.group_batches,
    }
    teacher = out / "teacher"
    jobs = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        if not finished(teacher, args.max_epochs):
            job = pool.submit(train, ["train_teacher.json"], {**common, "seed": 0, "output_dir": str(teacher)})
            print(f"teacher (groupDRO ResNet-50, seed 0): {job.result():.0f} s", flush=True)
        for seed in args.seeds:
            for mode in MODES:
                run_dir = out / f"{mode}_seed{seed}"
                if finished(run_dir, args.max_epochs):
                    continue
                overrides = {**common, "seed": seed, "output_dir": str(run_dir)}
                if mode in ("kd", "groupdistil"):
                    overrides["teacher_ckpt"] = str(teacher / "model_final.pt")
                jobs[(mode, seed)] = pool.submit(train, MODE_CONFIGS[mode], overrides)
        for (mode, seed), job in jobs.items():
            print(f"{mode} seed {seed}: {job.result():.0f} s", flush=True)
    total = time.perf_counter() - started

    results = {
        (mode, seed): json.loads((out / f"{mode}_seed{seed}" / "metrics.json").read_text())["metrics"]
        for mode in MODES
        for seed in args.seeds
    }
    teacher_metrics = json.loads((teacher / "metrics.json").read_text())["metrics"]
    batches = "one-group batches (Algorithm 1)" if args.group_batches else "mixed batches (online groupDRO)"
    lines = [
        f"Test accuracy (%), last epoch of {args.max_epochs}, image size {args.image_size}, {batches}, "
        f"mean +- sample std over seeds {args.seeds}:",
        "",
        "| model | worst-group | adjusted average |",
        "|---|---|---|",
        "| teacher: groupDRO ResNet-50 (seed 0) | "
        + " | ".join(f"{100 * teacher_metrics[f]:.1f}" for f in FIGURES)
        + " |",
    ]
    for mode in MODES:
        cells = [summary([results[(mode, s)][f] for s in args.seeds]) for f in FIGURES]
        lines.append(f"| {mode} ResNet-18 | {cells[0]} | {cells[1]} |")
    lines += ["", "Paired difference GroupDistil - KD per seed (points):", ""]
    for figure in FIGURES:
        diffs = [results[("groupdistil", s)][figure] - results[("kd", s)][figure] for s in args.seeds]
        per_seed = ", ".join(f"{100 * d:+.1f}" for d in diffs)
        wins = sum(d > 0 for d in diffs)
        lines.append(
            f"- {figure}: {summary(diffs)} (per seed {per_seed}; GroupDistil higher in {wins} of {len(diffs)})"
        )
    lines += ["", f"Wall time of this invocation: {total / 60:.1f} min ({args.jobs} jobs, one torch thread each)."]
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
