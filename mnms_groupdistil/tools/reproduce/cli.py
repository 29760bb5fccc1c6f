"""The command line of the grid (``python -m mnms_groupdistil.tools.reproduce``): its options, their checks,
and the plan trained on this machine or as SLURM jobs, then summarised."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.errors import SettingError
from mnms_groupdistil.overrides import check_overrides, parse_overrides
from mnms_groupdistil.tools.paper import paper_table
from mnms_groupdistil.tools.registry import DATASETS, DatasetSpec
from mnms_groupdistil.tools.slurm import JOBS_FOLDER, JobRunner, job_parameters, make_executor
from mnms_groupdistil.tracking import grid_tracking, log_summary

from .arguments import BUNDLES_DIR, config_files, resolve_setting, scoped_config
from .plan import Run, parse_grid, plan_runs, submission_order
from .results import write_outputs
from .running import collect_rows, run_bundle, run_grid, run_state

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


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
            (:func:`mnms_groupdistil.tools.slurm.job_parameters`).
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


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m mnms_groupdistil.tools.reproduce``."""
    parser = argparse.ArgumentParser(
        prog="python -m mnms_groupdistil.tools.reproduce",
        description="Run the paper's experiment grid through the bundles over several seeds, and summarise it.",
    )
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
    return parser


def _check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace, spec: DatasetSpec) -> None:
    """End the command with a usage error on a missing bundle, dataset folder or config file, or clashing options."""
    if not (Path(args.bundles_dir) / spec.bundle / "configs").is_dir():
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


def _plan(args: argparse.Namespace, spec: DatasetSpec) -> tuple[list[Run], dict[str, Any], dict[str, Any] | None]:
    """``(runs, overrides, job parameters)`` of the command; ``args.config_file`` gains the DDP config for jobs
    with several GPUs.

    Raises:
        ValueError: a bad override, grid, step size, split, seed or SLURM option (``SettingError`` included).
    """
    parameters = _job_parameters(args)
    if parameters is not None and parameters["gpus_per_node"] > 1:  # one process per GPU: the DDP configs
        configs = Path(args.bundles_dir) / spec.bundle / "configs"
        args.config_file = [str(configs / "multi_gpu_train.json"), *args.config_file]
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
    return runs, overrides, parameters


def _dry_run(args: argparse.Namespace, spec: DatasetSpec, runs: Sequence[Run], overrides: Mapping[str, Any]) -> None:
    """Log every run's state (``new``, ``partial``, ``done``); train nothing."""
    for index, run in enumerate(runs, start=1):
        configs = config_files(spec, run.method, args.bundles_dir, args.config_file)
        run_args = {"config_file": configs, **overrides, **dict(run.settings)}
        max_epochs = int(resolve_setting(run_args, "train#trainer#max_epochs"))
        logger.info(f"[{index}/{len(runs)}] {spec.name} {run.name}: {run_state(run.run_dir, max_epochs)}")


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
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = DATASETS[args.dataset]
    _check_paths(parser, args, spec)
    try:
        runs, overrides, parameters = _plan(args, spec)
    except ValueError as error:
        parser.error(str(error))
    logger.info(f"{len(runs)} runs of {spec.name} in {Path(args.output_dir) / 'runs' / spec.name}")
    if args.dry_run:
        _dry_run(args, spec, runs, overrides)
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
        f"Command: `python -m mnms_groupdistil.tools.reproduce {shlex.join(sys.argv[1:] if argv is None else argv)}`",
        f"{split_seed}Bundle `{spec.bundle}`; extra configs: "
        f"{', '.join(args.config_file) or 'none'}; overrides: {', '.join(args.override) or 'none'}.",
    ]
    written = write_outputs(spec, runs, rows, args.output_dir, settings)
    if tracking is not None:  # the tables and plots: a run of the grid's experiment
        log_summary(tracking["tracking_uri"], experiment, list(written.values()), tags={"dataset": spec.name})
    print("\n".join(paper_table(spec, rows, list(dict.fromkeys(r.split for r in runs)))))
    logger.info(f"{len(runs)} runs in {time.monotonic() - start:.0f} s; wrote {', '.join(map(str, written.values()))}")
    return 0
