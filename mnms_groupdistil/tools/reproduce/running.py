"""Training the grid's runs: each in its own bundle process (or SLURM job), finished runs reused, a stopped one
resumed; and the rows of finished runs collected without training."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from mnms_groupdistil.tools.paper import is_finite, result_row
from mnms_groupdistil.tools.registry import MEAN, WORST, DatasetSpec, Metric
from mnms_groupdistil.tools.runs import load_metrics
from mnms_groupdistil.tracking import grid_run_args, untracked

from .arguments import BUNDLES_DIR, bundle_args, resolve_setting
from .plan import Run

__all__ = [
    "RUN_ARGS",
    "bundle_command",
    "collect_rows",
    "run_bundle",
    "run_grid",
    "run_state",
    "teacher_checkpoint",
]

logger = logging.getLogger(__name__)

#: Name of the settings file written into every run folder (``--args_file`` of the bundle runner).
RUN_ARGS = "run_args.json"


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


def _row(spec: DatasetSpec, run: Run, report: Mapping[str, Any], eta_w: float | None) -> dict[str, Any]:
    identity = {"split": run.split, "run": run.key, "method": run.method.key, "seed": run.seed}
    return result_row(spec, report, **identity, eta_w=eta_w, run_dir=run.run_dir, cell=run.cell)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
