"""The runs of the reproduction grid as SLURM jobs, through submitit.

    python -m mnms_groupdistil.tools.reproduce /data/MnM/OpenDataset --launcher slurm --partition gpu \
        --gpus_per_run 1 --cpus_per_run 8 --time 2:00:00 [--slurm_parameters params.json]

Every run is one job, running the command the grid runs locally (``python -m monai.bundle run --args_file
run_args.json``; under ``torchrun`` with one process per GPU when a job has several). :func:`job_parameters`
turns the options, over a JSON file of further submitit parameters, into the parameters of a
``submitit.AutoExecutor``; :func:`make_executor` builds it; :class:`JobRunner` is a runner of the grid
(``(args_path, log_path) -> exit status``) that submits one run as a job and waits for its end. The grid's own
logic (finished runs reused, a distiller after its teacher, a folder with other settings refused) is the local
one: only where a run executes changes.

submitit is imported only when jobs are made; it comes with ``pip install mnms_groupdistil[slurm]``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mnms_groupdistil.errors import SettingError

__all__ = ["JOBS_FOLDER", "JobRunner", "job_name", "job_parameters", "make_executor", "parse_time"]

logger = logging.getLogger(__name__)

#: Folder (under the grid's ``output_dir``) of submitit's files: each job's pickles, stdout and stderr.
JOBS_FOLDER = "slurm_jobs"


def parse_time(text: str) -> int:
    """A SLURM time limit (``--time``) in whole minutes, rounded up.

    SLURM's formats: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``, ``days-hours``,
    ``days-hours:minutes`` and ``days-hours:minutes:seconds``.

    Example:
        >>> parse_time("90"), parse_time("1:30:00"), parse_time("1-12"), parse_time("0:30")
        (90, 90, 2160, 1)

    Raises:
        SettingError: text in none of these formats, or a limit of zero.
    """
    text = str(text).strip()
    days, dash, clock = text.rpartition("-")
    fields = clock.split(":")
    if not all(f.isdigit() for f in [*fields, *([days] if dash else [])]) or len(fields) > 3:
        raise SettingError(
            f"--time {text!r} is not a SLURM time limit: give minutes (120), hours:minutes:seconds (2:00:00) or "
            "days-hours[:minutes[:seconds]] (1-12)."
        )
    values = [int(f) for f in fields]
    if dash:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = [*values, 0, 0][:3]
        hours += 24 * int(days)
    elif len(values) == 3:
        hours, minutes, seconds = values
    else:  # minutes[:seconds]
        hours, (minutes, seconds) = 0, [*values, 0][:2]
    total = (hours * 60 + minutes) * 60 + seconds
    if total == 0:
        raise SettingError(f"--time {text!r} is zero; a job needs some time.")
    return math.ceil(total / 60)


def job_parameters(
    partition: str | None = None,
    gpus_per_run: int | None = None,
    cpus_per_run: int | None = None,
    time: str | None = None,
    parameters_file: str | Path | None = None,
    need_time: bool = True,
) -> dict[str, Any]:
    """The ``submitit.AutoExecutor.update_parameters`` arguments of every run's job.

    ``parameters_file`` (a JSON object of such arguments, e.g. ``{"slurm_account": "lab", "mem_gb": 32,
    "slurm_additional_parameters": {"constraint": "a100"}}``) comes first; the options given override it:
    ``partition`` -> ``slurm_partition``, ``gpus_per_run`` -> ``gpus_per_node`` (1 when neither gives it),
    ``cpus_per_run`` -> ``cpus_per_task``, ``time`` -> ``timeout_min``. Each job is one task on one node.

    Args:
        partition, gpus_per_run, cpus_per_run, time: the command line's options (None: not given).
        parameters_file: a JSON file of further parameters, or None.
        need_time: refuse parameters without a time limit (jobs are to be submitted).

    Raises:
        SettingError: an unreadable parameters file, a count below 0 (GPUs) or 1 (CPUs), a bad time, or no time
            limit (neither ``time`` nor ``timeout_min`` in the file) when ``need_time``.
    """
    parameters: dict[str, Any] = {}
    if parameters_file is not None:
        try:
            parameters = json.loads(Path(parameters_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise SettingError(f"--slurm_parameters {parameters_file}: cannot read it as JSON ({error}).") from None
        if not isinstance(parameters, dict):
            raise SettingError(f"--slurm_parameters {parameters_file} must hold a JSON object of submitit parameters.")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise SettingError(f"--gpus_per_run must be 0 or more, got {gpus_per_run}.")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise SettingError(f"--cpus_per_run must be 1 or more, got {cpus_per_run}.")
    given = {
        "slurm_partition": partition,
        "gpus_per_node": gpus_per_run,
        "cpus_per_task": cpus_per_run,
        "timeout_min": None if time is None else parse_time(time),
    }
    parameters.update({k: v for k, v in given.items() if v is not None})
    parameters.setdefault("gpus_per_node", 1)
    parameters.update({"nodes": 1, "tasks_per_node": 1})
    if need_time and "timeout_min" not in parameters:
        raise SettingError(
            "--launcher slurm needs each run's time limit: --time (e.g. 2:00:00) or timeout_min in --slurm_parameters."
        )
    return parameters


def make_executor(folder: str | Path, parameters: Mapping[str, Any], cluster: str = "slurm") -> Any:
    """A ``submitit.AutoExecutor`` on ``cluster`` with ``parameters`` (:func:`job_parameters`), its files in ``folder``.

    Args:
        folder: where submitit keeps each job's pickles, stdout and stderr.
        parameters: the jobs' parameters.
        cluster: ``"slurm"``; ``"local"`` runs the jobs as processes of this machine (submitit's local executor).

    Raises:
        SettingError: submitit is not installed, there is no SLURM here, or submitit refuses a parameter.
    """
    try:
        import submitit
    except ImportError:
        raise SettingError(
            "--launcher slurm submits the runs through submitit, which is not installed: "
            "pip install mnms_groupdistil[slurm] (or pip install submitit)."
        ) from None
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as error:
        raise SettingError(f"--launcher slurm: {error} Run the command on a machine that submits SLURM jobs.") from None
    try:
        executor.update_parameters(**parameters)
    except (NameError, TypeError, ValueError) as error:
        raise SettingError(f"submitit refuses the job parameters: {str(error).splitlines()[0]}") from None
    return executor


def job_name(run_dir: str | Path) -> str:
    """A run's job name: the last three parts of its folder (``split1_seed0_kd``)."""
    return "_".join(Path(run_dir).parts[-3:])


class JobRunner:
    """A runner of the grid that trains each run as one job of ``executor`` and waits for it.

    Args:
        executor: a ``submitit`` executor (:func:`make_executor`).
        run: ``(args_path, log_path, processes) -> exit status``, executed in the job; a module-level function,
            so that the job imports it (the grid's :func:`mnms_groupdistil.tools.reproduce.running.run_bundle`).
        processes: training processes per job (one per GPU; ``torchrun`` when more than one).

    Example:
        >>> runner = JobRunner(make_executor("runs/slurm_jobs", job_parameters("gpu", 1, 8, "2:00:00")), run_bundle)
        >>> status = runner(Path("runs/x/run_args.json"), Path("runs/x/bundle.log"))  # doctest: +SKIP
    """

    def __init__(self, executor: Any, run: Callable[[Path, Path, int], int], processes: int = 1) -> None:
        self.executor = executor
        self.run = run
        self.processes = int(processes)
        self._submitting = threading.Lock()  # the job name is an executor parameter, set just before submit
        self.jobs: list[Any] = []

    def __call__(self, args_path: Path, log_path: Path) -> int:
        """Submit one run, wait for its job, return the run's exit status (1 when the job ended without one)."""
        from submitit.core.utils import UncompletedJobError

        name = job_name(Path(args_path).parent)
        with self._submitting:
            self.executor.update_parameters(name=name)
            job = self.executor.submit(self.run, Path(args_path), Path(log_path), self.processes)
            self.jobs.append(job)
        logger.info(f"{name}: job {job.job_id} submitted; its output: {job.paths.stdout}")
        try:
            return int(job.result())
        except UncompletedJobError as error:  # cancelled, out of time or memory, node failure, ...
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"\njob {job.job_id} ended without finishing the run ({job.state}):\n{error}\n")
            return 1
