"""Run the paper's experiment grid through the bundles over several seeds, and summarise it.

    python -m mnms_groupdistil.reproduce /data/MnM/OpenDataset --seeds 0 1 2 3 4 --output_dir runs/reproduce

For every split and training seed the grid trains, each in its own process with MONAI's bundle
runner and the same configs users run: a groupDRO ResNet-18 teacher (``train.json`` +
``train_teacher.json``), a groupDRO DenseNet-121 student from scratch (``train_groupdro.json``),
a KD student (``train_kd.json``) and a GroupDistil student (``train.json``), both distilled from
the teacher of that split and seed. ``--group_step_sizes 0 0.001 0.01 0.1 1`` adds one GroupDistil
run per group-weight step size ``eta_w``. The patients of a split are fixed by ``--split_seed``;
``--seeds`` vary the training only.

    python -m mnms_groupdistil.reproduce /data/waterbirds --dataset waterbirds --seeds 0 1 2

runs the Waterbirds grid on its one official split (``metadata.csv``): per seed a groupDRO
ResNet-50 teacher, then ERM, groupDRO, KD and GroupDistil ResNet-18 students. ``--jobs 2`` trains
two runs at once (a distilling run waits for its teacher); on a small CPU give each process one
thread (``OMP_NUM_THREADS=1``).

Runs live in ``<output_dir>/runs/<dataset>/<split>/seed<seed>/<run>``. A run whose
``metrics.json`` reports the configured number of epochs is reused; any other is started again
with the same settings, and the bundle resumes it from the last checkpoint in its folder. Every
run records its settings in ``run_args.json`` (the ``--args_file`` of ``python -m monai.bundle
run``) and its output in ``bundle.log``; a folder started with other settings is refused rather
than mixed. Extra settings reach every run: ``--config_file configs/demo.json`` merges a JSON on
top of each run's configs (``teacher:configs/demo_teacher.json`` on top of the teacher's only),
``--override max_epochs=1 image_size=32 device=cpu`` sets single ids.

Written to ``output_dir``: ``results.csv`` (one row per run), ``results.md`` (mean +- sample
standard deviation over seeds beside the paper's figures, per-group accuracy, the ``eta_w``
table, the paired GroupDistil - KD difference per seed) and PNG plots (group weights over training
and per-group accuracy per method, accuracy against ``eta_w``).

About ``eta_w = 0``: the group weights then stay uniform, ``w_d = 1/G``, and the robust objective
is ``sum_d (1/G) * mean_{i in d} l_i``, i.e. every sample of group ``d`` weighs ``1/(G n_d)`` in a
batch holding ``n_d`` samples of that group. Plain KD weighs every sample ``1/B``. The two agree
exactly when every batch holds each of the G groups equally often (``n_d = B/G``): GroupDistil
with ``eta_w = 0`` and KD, both on ``balanced`` batches whose size G divides (``--override
batching=balanced`` for both), train the same network up to floating-point rounding. KD's own
configs train on ``mixed`` batches, so with the defaults GroupDistil at ``eta_w = 0`` is a
group-balanced resampling of KD, and with one-group batches (Algorithm 1) it trains on other
batches altogether: in general ``eta_w = 0`` is not KD.

``--grid ID=VALUE,VALUE ...`` makes a study: every combination of the values is a cell whose runs
get those settings (over every other setting, ``--override`` included) and live in a folder of
their own; ``--methods`` limits the methods (the teacher comes with a distiller). ``results.md``
then starts with a stability table per split: each cell's last-epoch worst-group accuracy on
validation and test data, its swing over the last three epochs and the runs that ended with a
group at or below 55 %, and the paired GroupDistil - KD difference.

``--launcher slurm`` trains every run as a SLURM job through submitit (:mod:`mnms_groupdistil.slurm`;
``pip install mnms_groupdistil[slurm]``), from a login node:

    python -m mnms_groupdistil.reproduce /data/MnM/OpenDataset --seeds 0 1 2 3 4 --output_dir runs/reproduce \
        --launcher slurm --partition gpu --gpus_per_run 1 --cpus_per_run 8 --time 2:00:00

The runs that need no teacher are submitted at once; a distilling run is submitted when its teacher's job has
ended. The command waits for the jobs and writes the summary when the last has ended; stopped earlier, it leaves
the submitted jobs running, and ``--collect`` (the same arguments) writes the summary once they have all finished.
``--jobs N`` caps the jobs submitted at a time (default: all). A job with several GPUs trains its run under
``torchrun``, one process per GPU, with the bundle's ``multi_gpu_train.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnms_groupdistil.errors import SettingError
from mnms_groupdistil.overrides import check_overrides, parse_overrides
from mnms_groupdistil.paper import (
    group_table,
    is_finite,
    paired_difference_table,
    paper_table,
    plot_group_accuracy,
    plot_step_sizes,
    result_row,
    step_size_table,
    study_table,
    write_csv,
)
from mnms_groupdistil.plots import plot_group_weights
from mnms_groupdistil.registry import DATASETS, MEAN, WORST, DatasetSpec, Method, Metric, bundles_dir
from mnms_groupdistil.runs import load_metrics
from mnms_groupdistil.slurm import JOBS_FOLDER, JobRunner, job_parameters, make_executor
from mnms_groupdistil.tracking import grid_run_args, grid_tracking, log_summary, untracked

__all__ = [
    "Run",
    "bundle_args",
    "bundle_command",
    "cell_folder",
    "cell_name",
    "collect_rows",
    "config_files",
    "scoped_config",
    "main",
    "parse_grid",
    "plan_runs",
    "resolve_setting",
    "run_bundle",
    "run_grid",
    "run_key",
    "run_state",
    "submission_order",
    "teacher_checkpoint",
    "write_outputs",
]

logger = logging.getLogger(__name__)

#: Bundle folders of a source checkout (``<repository>/bundles``).
BUNDLES_DIR = bundles_dir()

#: Name of the settings file written into every run folder (``--args_file`` of the bundle runner).
RUN_ARGS = "run_args.json"


# ------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Run:
    """One training run of the grid.

    Attributes:
        split: the split name.
        seed: the training seed.
        method: what is trained.
        step_size: ``eta_w`` of a step-size run; None keeps the configs' own.
        run_dir: the run's ``output_dir``.
        teacher_dir: the ``output_dir`` of the teacher it distils from, or None.
        cell: the grid cell's name (:func:`cell_name`), empty outside a study.
        settings: the cell's bundle settings, ``((id, value), ...)``.
    """

    split: str
    seed: int
    method: Method
    step_size: float | None
    run_dir: Path
    teacher_dir: Path | None = None
    cell: str = ""
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return run_key(self.method, self.step_size)

    @property
    def name(self) -> str:
        cell = f" [{self.cell}]" if self.cell else ""
        return f"{self.split}{cell} seed {self.seed} {self.key}"


def cell_name(settings: Mapping[str, Any]) -> str:
    """``"batching=balanced,lr_schedule=cosine"``: a grid cell as tables show it (empty for no settings)."""
    return ",".join(f"{key}={value}" for key, value in settings.items())


def cell_folder(settings: Mapping[str, Any]) -> str:
    """``"batching-balanced_lr_schedule-cosine"``: a grid cell's folder name."""
    return "_".join(f"{key}-{value}" for key, value in settings.items())


def parse_grid(items: Iterable[str]) -> list[dict[str, Any]]:
    """``["batching=one_group,balanced", "lr_schedule=constant,cosine"]`` -> the cells of their product.

    Each item is ``ID=VALUE,VALUE,...`` (values as in :func:`~mnms_groupdistil.overrides.parse_overrides`);
    the cells are every combination, the first axis varying slowest. No items give one cell without settings.

    Raises:
        ValueError: for an item without ``=``, an empty or repeated id, or no or repeated values.
    """
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = [v for v in text.split(",") if v.strip()]
        if not sep or not key or not values:
            raise ValueError(f"--grid takes ID=VALUE,VALUE,... items (e.g. batching=mixed,balanced), got '{item}'.")
        if key in axes:
            raise ValueError(f"--grid names {key} twice; give all its values in one item.")
        parsed = [parse_overrides([f"{key}={v.strip()}"])[key] for v in values]
        if len({repr(v) for v in parsed}) != len(parsed):
            raise ValueError(f"--grid {item}: a value is repeated.")
        axes[key] = parsed
    cells = [{}]
    for key, values in axes.items():
        cells = [{**cell, key: value} for cell in cells for value in values]
    return cells


def run_key(method: Method, step_size: float | None) -> str:
    """Folder and ``results.csv`` name of a run: the method, with ``_eta<step size>`` for a step-size run."""
    return method.key if step_size is None else f"{method.key}_eta{step_size:g}"


def plan_runs(
    spec: DatasetSpec,
    seeds: Sequence[int],
    output_dir: str | Path,
    splits: Sequence[str] | None = None,
    step_sizes: Sequence[float] = (),
    default_step_size: float | None = None,
    cells: Sequence[Mapping[str, Any]] = ({},),
    methods: Sequence[str] | None = None,
) -> list[Run]:
    """The grid's runs in the order they can run: per split, cell and seed, the teacher first.

    Args:
        spec: the dataset.
        seeds: training seeds (each gives one run per method).
        output_dir: the grid's folder; runs go to ``<output_dir>/runs/<dataset>/<split>/seed<seed>/<run>``,
            or ``<output_dir>/runs/<dataset>/<split>/<cell folder>/seed<seed>/<run>`` in a study.
        splits: splits to run; default: the paper's (``spec.splits``).
        step_sizes: ``eta_w`` values for extra runs of ``spec.sweep``.
        default_step_size: the ``eta_w`` the configs give ``spec.sweep``; that step size reuses
            the method's own run instead of training it twice.
        cells: the study's cells (:func:`parse_grid`): bundle settings that every run of the cell gets.
        methods: keys of the methods to run (default all); the teacher is added when a distiller needs it.

    Raises:
        ValueError: on an empty or repeated seed list, a repeated split, a negative step size or an
            unknown method.
    """
    seeds = [int(s) for s in seeds]
    splits = list(spec.splits if splits is None else splits)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}.")
    if not splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be a non-empty list of distinct names, got {splits}.")
    if spec.split_id is None and splits != list(spec.splits):
        raise ValueError(
            f"dataset {spec.name} has one fixed split ({', '.join(spec.splits)}); --splits {' '.join(splits)} "
            "does not apply to it."
        )
    if any(not math.isfinite(float(s)) or float(s) < 0 for s in step_sizes):
        raise ValueError(f"group_step_sizes must be finite and >= 0, got {list(step_sizes)}.")
    chosen = [spec.method(k) for k in (methods or [m.key for m in spec.methods])]
    if any(m.distils for m in chosen) and spec.teacher not in {m.key for m in chosen}:
        chosen.insert(0, spec.method(spec.teacher))
    chosen = [m for m in spec.methods if m in chosen]
    sweep = spec.method(spec.sweep)
    extra = [s for s in dict.fromkeys(float(s) for s in step_sizes) if s != default_step_size]
    if sweep not in chosen:
        extra = []
    runs: list[Run] = []
    for split in splits:
        for cell in cells:
            for seed in seeds:
                folder = Path(output_dir) / "runs" / spec.name / split
                folder = (folder / cell_folder(cell) if cell else folder) / f"seed{seed}"
                teacher_dir = folder / spec.teacher
                for method, eta in [*((m, None) for m in chosen), *((sweep, eta) for eta in extra)]:
                    key = run_key(method, eta)
                    teacher = teacher_dir if method.distils else None
                    runs.append(
                        Run(split, seed, method, eta, folder / key, teacher, cell_name(cell), tuple(cell.items()))
                    )
    return runs


#: Bundle ids the grid sets itself; an override of one of them is refused.
GRID_IDS = ("run_id", "config_file", "dataset_dir", "output_dir", "seed", "split_seed", "teacher_ckpt")


def scoped_config(item: str | Path) -> tuple[str | None, str]:
    """``(method key, file)`` of an extra config: ``METHOD:FILE`` reaches one method's runs, ``FILE`` every run."""
    scope, sep, path = str(item).partition(":")
    if sep and scope.isidentifier() and len(scope) > 1:  # not a drive letter
        return scope, path
    return None, str(item)


def config_files(
    spec: DatasetSpec, method: Method, bundles_dir: str | Path = BUNDLES_DIR, extra_configs: Sequence[str | Path] = ()
) -> list[str]:
    """The config files a run of ``method`` merges: the bundle's, then ``extra_configs`` in their order.

    An extra config written ``METHOD:FILE`` (e.g. ``teacher:configs/demo_teacher.json``) is merged into
    the runs of that method only (see :func:`scoped_config`).
    """
    configs = Path(bundles_dir) / spec.bundle / "configs"
    scoped = [scoped_config(c) for c in extra_configs]
    return [str(configs / name) for name in method.configs] + [
        path for scope, path in scoped if scope in (None, method.key)
    ]


def bundle_args(
    spec: DatasetSpec,
    run: Run,
    dataset_dir: str | Path,
    bundles_dir: str | Path = BUNDLES_DIR,
    extra_configs: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    split_seed: int = 0,
    teacher_ckpt: str | Path | None = None,
) -> dict[str, Any]:
    """The arguments of ``python -m monai.bundle run`` for one run (written as its ``--args_file``).

    Args:
        spec: the dataset.
        run: the run.
        dataset_dir: the dataset's root folder.
        bundles_dir: folder holding ``spec.bundle``.
        extra_configs: JSON files merged on top of the method's configs.
        overrides: single bundle ids to set.
        split_seed: seed that fixes the split's patients (datasets with a ``split_id`` only).
        teacher_ckpt: the teacher's model, for a distilling method.

    Raises:
        ValueError: when ``overrides`` sets an id the grid controls, or a distilling run has no teacher.
    """
    overrides = dict(overrides or {})
    settings = dict(run.settings)
    taken = sorted({*overrides, *settings} & {*GRID_IDS, *([spec.split_id] if spec.split_id else [])})
    if taken:
        raise ValueError(
            f"--override or --grid sets {', '.join(taken)}, which the grid sets itself "
            "(use --seeds, --splits, --split_seed, --output_dir instead)."
        )
    if run.method.distils and teacher_ckpt is None:
        raise ValueError(f"run {run.name} distils from a teacher: teacher_ckpt is needed.")
    args: dict[str, Any] = {
        "run_id": "training",
        "config_file": config_files(spec, run.method, bundles_dir, extra_configs),
        "dataset_dir": str(dataset_dir),
        "output_dir": str(run.run_dir),
        "seed": run.seed,
    }
    if spec.split_id:
        args["split_seed"] = int(split_seed)
        args[spec.split_id] = run.split
    args.update(overrides)
    args.update(settings)
    if run.step_size is not None:
        args["group_step_size"] = run.step_size
    if teacher_ckpt is not None:
        args["teacher_ckpt"] = str(teacher_ckpt)
    return args


def resolve_setting(args: Mapping[str, Any], config_id: str) -> Any:
    """The value a bundle run with ``args`` gives ``config_id`` (configs merged, overrides applied).

    Args:
        args: ``config_file`` (list) and the overrides, as from :func:`bundle_args`.
        config_id: the bundle id, e.g. ``group_step_size`` or ``train#trainer#max_epochs``.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(list(args["config_file"]))
    parser.update({k: v for k, v in args.items() if k not in ("run_id", "config_file")})
    return parser.get_parsed_content(config_id)


# ------------------------------------------------------------------------------- running it


def run_state(run_dir: str | Path, max_epochs: int, required: Sequence[str] = (WORST.key,)) -> str:
    """``"done"``, ``"partial"`` or ``"new"``.

    Done: the ``history`` of the run's ``metrics.json`` holds an evaluation of epoch ``max_epochs``
    (or later) and its reported ``metrics`` hold every ``required`` figure. Partial: the folder
    holds a checkpoint or a ``metrics.json`` of earlier epochs (the bundle resumes it). New: neither.
    """
    report = load_metrics(run_dir)
    if report is not None:
        epochs = [entry.get("epoch") for entry in report.get("history", [])]
        last = max((e for e in epochs if isinstance(e, int)), default=0)
        metrics = report.get("metrics") or {}
        if last >= max_epochs and all(is_finite(metrics.get(k)) for k in required):
            return "done"
        return "partial"
    return "partial" if any(Path(run_dir).glob("checkpoint*.pt")) else "new"


def bundle_command(args_path: Path, processes: int = 1) -> list[str]:
    """``python -m monai.bundle run --args_file ARGS``; for several processes under ``torchrun --standalone``."""
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    else:
        launcher = [sys.executable]
    return [*launcher, "-m", "monai.bundle", "run", "--args_file", str(args_path)]


def run_bundle(args_path: Path, log_path: Path, processes: int = 1) -> int:
    """Run one bundle training in a new Python process (``processes`` under torchrun); output appended to ``log_path``.

    Returns:
        The process's exit status.
    """
    command = bundle_command(args_path, processes)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def teacher_checkpoint(teacher_dir: Path) -> Path:
    """The model a finished teacher run reports (``metrics.json`` ``selection.checkpoint``; default ``model_final.pt``).

    Raises:
        ValueError: when that file does not exist.
    """
    report = load_metrics(teacher_dir) or {}
    name = (report.get("selection") or {}).get("checkpoint") or "model_final.pt"
    path = Path(name) if Path(name).is_absolute() else teacher_dir / name
    if not path.is_file():
        raise ValueError(f"the teacher run {teacher_dir} has no model file {path}: did it finish?")
    return path


def _summary(report: Mapping[str, Any] | None, metrics: Sequence[Metric]) -> str:
    values = (report or {}).get("metrics", {})
    return ", ".join(f"{m.label} {_percent(values.get(m.key))}" for m in metrics)


def _percent(value: Any) -> str:
    return "-" if not is_finite(value) else f"{100 * float(value):.1f}%"


def run_grid(
    spec: DatasetSpec,
    runs: Sequence[Run],
    dataset_dir: str | Path,
    bundles_dir: str | Path = BUNDLES_DIR,
    extra_configs: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    split_seed: int = 0,
    runner: Callable[[Path, Path], int] = run_bundle,
    jobs: int = 1,
    tracking: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train the runs that are not finished and return one :func:`result_row` per run, in ``runs``' order.

    Logs one progress line per run (``[i/N] name: ...`` with its time and result). Up to ``jobs``
    runs train at once, started in ``runs``' order; a distilling run starts once its teacher has
    finished. With ``jobs=1`` the runs train one after the other. After a failure no further run
    starts; the runs already training finish.

    Args:
        spec: the dataset.
        runs: from :func:`plan_runs`.
        dataset_dir, bundles_dir, extra_configs, overrides, split_seed: see :func:`bundle_args`.
        runner: ``(args_path, log_path) -> exit status``; default :func:`run_bundle`.
        jobs: how many runs train at the same time (each its own process with the default runner).
        tracking: the tracking arguments every run shares (:func:`~mnms_groupdistil.tracking.grid_tracking`);
            each run is then an MLflow run named :attr:`Run.name`, tagged with its method, split, seed and cell.

    Raises:
        ValueError: when ``jobs`` is not a positive int, or a run folder holds a run started with other settings.
        RuntimeError: when a run fails or ends without reporting all its epochs (its log is named).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}.")
    required = [m.key for m in (*spec.headline, WORST, MEAN)]
    stop = threading.Event()

    def train(index: int, run: Run) -> dict[str, Any] | None:
        if stop.is_set():
            return None
        try:
            teacher = teacher_checkpoint(run.teacher_dir) if run.teacher_dir is not None else None
            args = bundle_args(spec, run, dataset_dir, bundles_dir, extra_configs, overrides, split_seed, teacher)
            tags = {"method": run.key, "split": run.split, "seed": run.seed, **({"cell": run.cell} if run.cell else {})}
            args.update(grid_run_args(tracking, run.name, tags))
            return _train_one(spec, run, args, f"[{index}/{len(runs)}] {spec.name} {run.name}", required, runner)
        except Exception:
            stop.set()
            raise

    futures: dict[Path, Future] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for index, run in enumerate(runs, start=1):
            teacher = futures.get(run.teacher_dir) if run.teacher_dir is not None else None
            if teacher is not None:
                wait([teacher])
            if stop.is_set():
                break
            futures[run.run_dir] = pool.submit(train, index, run)
    rows = []
    for future in futures.values():
        row = future.result()  # the first failure in the runs' order is raised
        if row is not None:
            rows.append(row)
    return rows


def _train_one(
    spec: DatasetSpec,
    run: Run,
    args: dict[str, Any],
    prefix: str,
    required: Sequence[str],
    runner: Callable[[Path, Path], int],
) -> dict[str, Any]:
    """Reuse or train one run of :func:`run_grid` (its :func:`bundle_args` given) and return its row."""
    args_path = run.run_dir / RUN_ARGS
    _check_recorded_args(run, args)
    max_epochs = int(resolve_setting(args, "train#trainer#max_epochs"))
    state = run_state(run.run_dir, max_epochs, required)
    eta_w = _eta_w(run, args)
    if state == "done":
        report = load_metrics(run.run_dir)
        logger.info(f"{prefix}: finished earlier, reused; {_summary(report, spec.headline)}")
        return _row(spec, run, report, eta_w)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    args_path.write_text(json.dumps(args, indent=2) + "\n", encoding="utf-8")
    log_path = run.run_dir / "bundle.log"
    action = "resuming" if state == "partial" else "training"
    logger.info(f"{prefix}: {action} (log: {log_path})")
    start = time.monotonic()
    status = runner(args_path, log_path)
    seconds = time.monotonic() - start
    if status != 0 or run_state(run.run_dir, max_epochs, required) != "done":
        if status:
            what = f"failed (exit status {status})"
        else:
            what = f"ended without reporting epoch {max_epochs} in {run.run_dir / 'metrics.json'}"
        raise RuntimeError(
            f"{prefix} {what}; see {log_path}. The same command resumes it from its last checkpoint; "
            f"remove {run.run_dir} to train it from scratch. Last lines of the log:\n{_tail(log_path)}"
        )
    report = load_metrics(run.run_dir)
    logger.info(f"{prefix}: done in {seconds:.0f} s; {_summary(report, spec.headline)}")
    return _row(spec, run, report, eta_w)


def _check_recorded_args(run: Run, args: Mapping[str, Any]) -> None:
    """Refuse a run folder whose ``run_args.json`` holds other settings than ``args``.

    Raises:
        ValueError: naming the settings that differ and what to do.
    """
    args_path = run.run_dir / RUN_ARGS
    if args_path.is_file():
        before = untracked(json.loads(args_path.read_text(encoding="utf-8")))  # tracked or not: the same run
        args = untracked(args)
        if before != args:
            changed = sorted(k for k in {*before, *args} if before.get(k) != args.get(k))
            raise ValueError(
                f"{run.run_dir} holds a run started with other settings ({', '.join(changed)} differ in "
                f"{args_path}): use another --output_dir, or remove that folder to train it again."
            )


def _eta_w(run: Run, args: Mapping[str, Any]) -> float | None:
    """The group-weight step size a robust run trains with (None for the others)."""
    return float(resolve_setting(args, "group_step_size")) if run.method.robust else None


def collect_rows(
    spec: DatasetSpec,
    runs: Sequence[Run],
    dataset_dir: str | Path,
    bundles_dir: str | Path = BUNDLES_DIR,
    extra_configs: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    split_seed: int = 0,
) -> list[dict[str, Any]]:
    """One :func:`result_row` per run, in ``runs``' order, from runs that have all finished; trains nothing.

    What ``reproduce --collect`` summarises: the runs an earlier command (or its jobs) trained.

    Args:
        spec, runs, dataset_dir, bundles_dir, extra_configs, overrides, split_seed: as for :func:`run_grid`.

    Raises:
        ValueError: a run folder holds a run started with other settings.
        RuntimeError: some runs have not finished (each named with its state).
    """
    required = [m.key for m in (*spec.headline, WORST, MEAN)]
    rows, unfinished = [], []
    for run in runs:
        try:
            teacher = teacher_checkpoint(run.teacher_dir) if run.teacher_dir is not None else None
        except ValueError as error:  # the teacher has not finished: it is listed too
            unfinished.append(f"{run.name}: {error}")
            continue
        args = bundle_args(spec, run, dataset_dir, bundles_dir, extra_configs, overrides, split_seed, teacher)
        _check_recorded_args(run, args)
        state = run_state(run.run_dir, int(resolve_setting(args, "train#trainer#max_epochs")), required)
        if state != "done":
            unfinished.append(f"{run.name}: {state} ({run.run_dir})")
            continue
        rows.append(_row(spec, run, load_metrics(run.run_dir), _eta_w(run, args)))
    if unfinished:
        raise RuntimeError(
            f"{len(unfinished)} of {len(runs)} runs have not finished, so there is no summary yet:\n"
            + "\n".join(f"  {line}" for line in unfinished)
            + "\nWait for their jobs to end, or run the command without --collect to train them."
        )
    return rows


def submission_order(runs: Sequence[Run]) -> list[Run]:
    """``runs`` with those that need no teacher first (submitted at once as jobs), then the distilling ones."""
    return [r for r in runs if r.teacher_dir is None] + [r for r in runs if r.teacher_dir is not None]


def _row(spec: DatasetSpec, run: Run, report: Mapping[str, Any], eta_w: float | None) -> dict[str, Any]:
    identity = {"split": run.split, "run": run.key, "method": run.method.key, "seed": run.seed}
    return result_row(spec, report, **identity, eta_w=eta_w, run_dir=run.run_dir, cell=run.cell)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------------------------ output


def write_outputs(
    spec: DatasetSpec,
    runs: Sequence[Run],
    rows: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and the plots; return them by name.

    In a study (runs in several grid cells) ``results.md`` starts with the stability table of every
    split (:func:`mnms_groupdistil.paper.study_table`), then holds the usual tables and plots once per cell.

    Args:
        spec: the dataset.
        runs: the runs, in the order of ``rows``.
        rows: from :func:`result_row`.
        output_dir: where to write.
        settings: lines describing how the grid was run, printed at the top of ``results.md``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = list(dict.fromkeys(run.split for run in runs))
    seeds = sorted({run.seed for run in runs})
    cells = list(dict.fromkeys(run.cell for run in runs))
    written = {"results.csv": write_csv(rows, out / "results.csv")}
    lines = [f"# {spec.title}", ""]
    lines += [f"- {s}" for s in settings]
    lines += [
        f"- Training seeds: {', '.join(map(str, seeds))} ({len(seeds)}); the paper averaged {spec.paper_seeds}.",
        "- Ours: mean ± sample standard deviation over the seeds, in %. Paper: its reported mean (± std where given).",
        "",
    ]
    if cells != [""]:
        lines += [
            "## Stability study: the last epoch of every run, per cell",
            "",
            "Worst-group accuracy of the last epoch (mean ± std over seeds, %); swing: the mean absolute change "
            "of that figure between consecutive epochs among the last three (points, mean over seeds); runs <= 55%: "
            "runs whose last epoch left some group at or below 55%. Choose settings on the val columns only.",
            "",
        ]
        for split in splits:
            lines += [f"### {split}", "", *study_table(spec, rows, split), ""]
    plots: list[Path] = []
    for cell in cells:
        mine = [(run, row) for run, row in zip(runs, rows) if run.cell == cell]
        cell_lines, cell_plots = _cell_sections(
            spec, [run for run, _ in mine], [row for _, row in mine], out, cell_folder(dict(mine[0][0].settings))
        )
        if cell:
            lines += [f"## Cell {cell}", ""]
            cell_lines = [f"#{line}" if line.startswith("## ") else line for line in cell_lines]
        lines += cell_lines
        plots += cell_plots
    if plots:
        lines += ["## Plots", "", *(f"- `{p.name}`" for p in plots), ""]
    written["results.md"] = out / "results.md"
    written["results.md"].write_text("\n".join(lines), encoding="utf-8")
    written.update({p.name: p for p in plots})
    return written


def _cell_sections(
    spec: DatasetSpec, runs: Sequence[Run], rows: Sequence[Mapping[str, Any]], out: Path, suffix: str
) -> tuple[list[str], list[Path]]:
    """The tables (Markdown lines) and plots of the runs of one grid cell; ``suffix`` ends the plots' names."""
    splits = list(dict.fromkeys(run.split for run in runs))
    tag = f"_{suffix}" if suffix else ""
    plots: list[Path] = []
    for split in splits:
        mine = [run for run in runs if run.split == split]
        accuracy = plot_group_accuracy(spec, rows, split, out / f"group_accuracy_{spec.name}_{split}{tag}.png")
        methods = {f"{m.label} {m.network}": [r.run_dir for r in mine if r.key == m.key] for m in spec.methods}
        weights = plot_group_weights(
            methods,
            out / f"group_weights_{spec.name}_{split}{tag}.png",
            f"{spec.name} {split}: group weights",
            spec.group_label,
        )
        by_eta: dict[float, list[Path]] = {}
        for row, run in zip(rows, runs):
            if run.split == split and run.method.key == spec.sweep and row["eta_w"] is not None:
                by_eta.setdefault(float(row["eta_w"]), []).append(run.run_dir)
        sweep_weights = None
        if len(by_eta) > 1:
            sweep_weights = plot_group_weights(
                {f"eta_w = {eta:g}": by_eta[eta] for eta in sorted(by_eta)},
                out / f"group_weights_eta_{spec.name}_{split}{tag}.png",
                f"{spec.name} {split}: {spec.method(spec.sweep).label} group weights per eta_w",
                spec.group_label,
            )
        steps = plot_step_sizes(spec, rows, split, out / f"step_sizes_{spec.name}_{split}{tag}.png")
        plots += [p for p in (accuracy, weights, sweep_weights, steps) if p is not None]
    lines = [*paper_table(spec, rows, splits), ""]
    if spec.note:
        lines += [spec.note, ""]
    for split in splits:
        lines += [f"## Per-group test accuracy (%), {split}", "", *group_table(spec, rows, split), ""]
    sweep = spec.method(spec.sweep)
    lines += [
        f"## Paired difference {sweep.label} - KD per seed (test accuracy, points)",
        "",
        *paired_difference_table(spec, rows, splits),
        "",
        "Each seed's two students distil from the same teacher; the spread is the sample std of the differences.",
        "",
    ]
    if any(run.step_size is not None for run in runs):
        label = sweep.label
        lines += [
            f"## {label} against the group weight step size eta_w (test accuracy, %)",
            "",
            *step_size_table(spec, rows, splits),
            "",
            f"With eta_w = 0 the weights stay uniform and {label} trains on sum_d (1/G) mean_d: the same objective "
            "as KD only on batches that hold every group equally often (batching balanced); on other batches it "
            "is not KD.",
            "",
        ]
    return lines, plots


def _add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose where the runs train (this machine or SLURM jobs) and ``--collect``."""
    parser.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: processes of this machine (default); slurm: one SLURM job per run, through submitit",
    )
    slurm = parser.add_argument_group("SLURM jobs (--launcher slurm)")
    slurm.add_argument("--partition", help="the jobs' SLURM partition")
    slurm.add_argument("--gpus_per_run", type=int, help="GPUs of each run's job (default 1; several: torchrun)")
    slurm.add_argument("--cpus_per_run", type=int, help="CPUs of each run's job (data loading)")
    slurm.add_argument("--time", help="each job's time limit, as SLURM writes it: 120, 2:00:00, 1-12")
    slurm.add_argument(
        "--slurm_parameters",
        help="JSON file of further submitit parameters (e.g. slurm_account, mem_gb, slurm_additional_parameters); "
        "the options above override it",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: write the summary of runs that have finished (e.g. as SLURM jobs of an earlier command)",
    )


def _job_parameters(args: argparse.Namespace) -> dict[str, Any] | None:
    """The jobs' submitit parameters for ``--launcher slurm``, else None.

    Raises:
        SettingError: a SLURM option without ``--launcher slurm``, or a bad one
            (:func:`mnms_groupdistil.slurm.job_parameters`).
    """
    options = ("partition", "gpus_per_run", "cpus_per_run", "time", "slurm_parameters")
    if args.launcher != "slurm":
        given = [f"--{name}" for name in options if getattr(args, name) is not None]
        if given:
            raise SettingError(f"{', '.join(given)} only apply to --launcher slurm.")
        return None
    return job_parameters(
        args.partition, args.gpus_per_run, args.cpus_per_run, args.time, args.slurm_parameters, not args.collect
    )


def _train(
    args: argparse.Namespace,
    spec: DatasetSpec,
    runs: Sequence[Run],
    overrides: Mapping[str, Any],
    runner: Callable[..., int],
    parameters: Mapping[str, Any] | None,
    cluster: str,
    tracking: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_grid` on this machine, or with each run a job of a submitit executor on ``cluster``."""
    common = (spec, runs, args.dataset_dir, args.bundles_dir, args.config_file, overrides, args.split_seed)
    if parameters is None:
        return run_grid(*common, runner, args.jobs or 1, tracking)
    executor = make_executor(Path(args.output_dir) / JOBS_FOLDER, parameters, cluster)
    ordered = submission_order(runs)
    jobs = JobRunner(executor, runner, max(1, int(parameters["gpus_per_node"])))
    rows = run_grid(spec, ordered, *common[2:], jobs, args.jobs or len(ordered), tracking)
    by_dir = {run.run_dir: row for run, row in zip(ordered, rows)}
    return [by_dir[run.run_dir] for run in runs]


def main(argv: Sequence[str] | None = None, runner: Callable[..., int] = run_bundle, cluster: str = "slurm") -> int:
    """The command line; ``runner`` executes each run (default: a new Python process, :func:`run_bundle`).

    Args:
        argv: the arguments (default: the command line's).
        runner: ``(args_path, log_path) -> exit status``; with ``--launcher slurm`` it runs in each job and takes
            the job's process count too (a module-level function).
        cluster: the submitit cluster of ``--launcher slurm`` (``"local"``: jobs as processes of this machine).

    Returns:
        The exit status: 0, or 1 when a run failed, a run folder holds other settings, or (``--collect``) a run
        has not finished.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dataset_dir",
        help="the dataset's root folder (M&Ms: the OpenDataset folder; Waterbirds: the release folder or its parent)",
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnms")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: as many as the paper)")
    parser.add_argument("--output_dir", default="runs/reproduce", help="runs, tables and plots go here")
    parser.add_argument("--splits", nargs="+", help="splits to run (default: the paper's)")
    parser.add_argument("--split_seed", type=int, default=0, help="seed that fixes each split's patients")
    parser.add_argument("--group_step_sizes", type=float, nargs="*", default=[], help="extra eta_w runs")
    parser.add_argument(
        "--config_file",
        nargs="*",
        default=[],
        help="JSON files merged on top of every run's configs, in order; METHOD:FILE (e.g. "
        "teacher:configs/demo_teacher.json) merges FILE into that method's runs only",
    )
    parser.add_argument("--override", nargs="*", default=[], help="ID=VALUE bundle settings for every run")
    parser.add_argument("--bundles_dir", default=str(BUNDLES_DIR), help="folder holding the bundles")
    parser.add_argument(
        "--jobs",
        type=int,
        help="runs trained at the same time, each its own process (with OMP_NUM_THREADS=1 on a small CPU); "
        "default 1, or with --launcher slurm every run",
    )
    parser.add_argument(
        "--grid",
        nargs="*",
        default=[],
        help="study axes, ID=VALUE,VALUE,... (e.g. batching=one_group,mixed,balanced lr_schedule=constant,cosine): "
        "every combination is a cell of its own runs",
    )
    parser.add_argument("--methods", nargs="+", help="methods to run (default all; the teacher comes with distillers)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and their state, train nothing")
    parser.add_argument("--tracking", help="track every run with MLflow: mlflow, or a tracking settings file")
    parser.add_argument("--tracking_uri", help="where to track (default: sqlite <output_dir>/mlruns.db)")
    parser.add_argument("--experiment_name", help="the grid's MLflow experiment (default: <bundle>_reproduce)")
    _add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    spec = DATASETS[args.dataset]
    bundle = Path(args.bundles_dir) / spec.bundle
    if not (bundle / "configs").is_dir():
        parser.error(f"--bundles_dir {args.bundles_dir}: no bundle {spec.bundle} with a configs folder there.")
    if not Path(args.dataset_dir).is_dir():
        parser.error(f"dataset_dir {args.dataset_dir} is not a folder.")
    for config in args.config_file:
        scope, path = scoped_config(config)
        if scope is not None and scope not in {m.key for m in spec.methods}:
            keys = ", ".join(m.key for m in spec.methods)
            parser.error(f"--config_file {config}: no method {scope!r} in {spec.name} (methods: {keys}).")
        if not Path(path).is_file():
            parser.error(f"--config_file {config}: {path} does not exist.")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}.")
    if args.collect and args.dry_run:
        parser.error("--collect and --dry_run: choose one.")
    try:
        parameters = _job_parameters(args)
        if parameters is not None and parameters["gpus_per_node"] > 1:  # one process per GPU: the DDP configs
            args.config_file = [str(bundle / "configs" / "multi_gpu_train.json"), *args.config_file]
        overrides = parse_overrides(args.override)
        seeds = args.seeds if args.seeds is not None else list(range(spec.paper_seeds))
        sweep = spec.method(spec.sweep)
        sweep_args = {"config_file": config_files(spec, sweep, args.bundles_dir, args.config_file), **overrides}
        check_overrides(sweep_args["config_file"], overrides, where="--override")
        default_step = float(resolve_setting(sweep_args, "group_step_size"))
        cells = parse_grid(args.grid)
        runs = plan_runs(
            spec, seeds, args.output_dir, args.splits, args.group_step_sizes, default_step, cells, args.methods
        )
    except ValueError as error:
        parser.error(str(error))
    logger.info(f"{len(runs)} runs of {spec.name} in {Path(args.output_dir) / 'runs' / spec.name}")
    if args.dry_run:
        for index, run in enumerate(runs, start=1):
            configs = config_files(spec, run.method, args.bundles_dir, args.config_file)
            run_args = {"config_file": configs, **overrides, **dict(run.settings)}
            max_epochs = int(resolve_setting(run_args, "train#trainer#max_epochs"))
            state = run_state(run.run_dir, max_epochs)
            logger.info(f"[{index}/{len(runs)}] {spec.name} {run.name}: {state}")
        return 0
    start = time.monotonic()
    try:
        experiment = args.experiment_name or f"{spec.bundle}_reproduce"
        tracking = grid_tracking(args.tracking, args.output_dir, args.tracking_uri, experiment)
        if args.collect:
            rows = collect_rows(
                spec, runs, args.dataset_dir, args.bundles_dir, args.config_file, overrides, args.split_seed
            )
        else:
            rows = _train(args, spec, runs, overrides, runner, parameters, cluster, tracking)
    except (RuntimeError, ValueError) as error:
        logger.error(str(error))
        return 1
    split_seed = f"Split seed {args.split_seed}; " if spec.split_id else ""
    settings = [
        f"Command: `python -m mnms_groupdistil.reproduce {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        f"{split_seed}Bundle `{spec.bundle}`; extra configs: "
        f"{', '.join(args.config_file) or 'none'}; overrides: {', '.join(args.override) or 'none'}.",
    ]
    written = write_outputs(spec, runs, rows, args.output_dir, settings)
    if tracking is not None:  # the tables and plots: a run of the grid's experiment
        log_summary(tracking["tracking_uri"], experiment, list(written.values()), tags={"dataset": spec.name})
    print("\n".join(paper_table(spec, rows, list(dict.fromkeys(r.split for r in runs)))))
    logger.info(f"{len(runs)} runs in {time.monotonic() - start:.0f} s; wrote {', '.join(map(str, written.values()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
