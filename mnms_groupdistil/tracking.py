"""MLflow tracking of a bundle run: what MONAI's ``--tracking mlflow`` records, completed for this project's engine.

``python -m monai.bundle run training ... --tracking mlflow`` (or ``--tracking settings.json``) makes MONAI add
an ``MLFlowHandler`` to ``train#handlers`` (and one to ``validate#handlers``; an evaluation config gets one in its
top-level ``handlers``). Alone it would not fit this engine: its per-iteration loss transform expects a
decollated output, it logs every iteration, and it never sees the test evaluator, the group weights or the run's
records. :class:`RunTracking`, wired in every train and evaluate config, finds that handler among the engine's
handlers and completes it; without one (no ``--tracking``) it does nothing. In the run MONAI opens it records:

- every ``log_interval`` iterations: the training loss, the learning rate, ``group_weight/<group>`` and
  ``group_loss/<group>`` (:func:`~mnms_groupdistil.handlers.training_scalars`, as TensorBoard gets them);
- after each evaluation by one of its ``evaluators`` (the test evaluator of a training run), its figures at
  the trainer's epoch; MONAI's own handler logs the validation figures;
- when the engine starts: ``params`` (the run's settings) as parameters and ``tags`` as tags;
- after each epoch: ``artifacts`` (``run_config.json``, ``split.json``, ``metrics.json``), so that a stopped
  run holds its latest records too.

MONAI's settings disable their handlers where the config id ``is_not_rank0`` is true; the bundles define it as
:func:`tracking_disabled`, which also refuses to start when MLflow is not installed, naming the package extra.

The grid of :mod:`mnms_groupdistil.tools.reproduce` tracks each of its runs in one experiment: :func:`grid_tracking`
sets it up, :func:`grid_run_args` gives a run's tracking arguments, :func:`untracked` takes them out again when a
run's recorded arguments are compared, and :func:`log_summary` keeps the grid's tables and plots in a run of their
own.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer
from monai.handlers import MLFlowHandler

from .acceleration import every
from .errors import InputError
from .handlers import loss_from_output, training_scalars
from .handlers.events import attach_once

__all__ = [
    "TRACKING_EXTRA",
    "TRACKING_IDS",
    "RunTracking",
    "TrackingNotInstalledError",
    "grid_run_args",
    "grid_tracking",
    "log_summary",
    "require_mlflow",
    "tracking_disabled",
    "untracked",
]

logger = logging.getLogger(__name__)

#: What installs MLflow with the package.
TRACKING_EXTRA = "pip install 'mnms_groupdistil[tracking]'"

#: The bundle arguments that set where and under which name a run is tracked, not what it trains.
TRACKING_IDS = ("tracking", "tracking_uri", "experiment_name", "run_name", "tracking_tags")


class TrackingNotInstalledError(InputError):
    """Tracking was asked for, but MLflow cannot be imported."""


def require_mlflow() -> None:
    """Check that MLflow can be imported.

    Raises:
        TrackingNotInstalledError: it cannot; the message names the extra that installs it.
    """
    try:
        importlib.import_module("mlflow")
    except ImportError as error:
        raise TrackingNotInstalledError(
            f"--tracking needs MLflow, which is not installed ({error}): {TRACKING_EXTRA}"
        ) from error


def tracking_disabled(main_process: bool) -> bool:
    """The bundles' ``is_not_rank0``: whether this process leaves tracking to another (all but the main one).

    MONAI's tracking handlers read this id only when tracking is on, so it is also where a run asked to track
    stops, before it trains, if MLflow is missing.

    Args:
        main_process: whether this process is the run's main one (rank 0).

    Raises:
        TrackingNotInstalledError: MLflow cannot be imported.
    """
    require_mlflow()
    return not main_process


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of an engine's ``state.metrics`` that are one number each (per-group dicts are also there
    under their own names), as floats."""
    scalars = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[name] = float(value)
    return scalars


class RunTracking:
    """Complete the ``MLFlowHandler`` that MONAI's ``--tracking`` put among an engine's handlers.

    ``attach(engine)`` finds that handler in ``handlers``; there is none without ``--tracking`` (or on a process
    that does not track), and then it does nothing. Attach it after the engine is built, so that MONAI's handler
    has opened its run when this one's ``STARTED`` comes. On a trainer, unless the tracking settings give their
    own ``iteration_logger``, the training figures replace MONAI's default iteration log (whose loss transform
    does not fit this trainer's output).

    Args:
        handlers: the engine's handlers (``@train#handlers``; ``@handlers`` of an evaluation).
        group_names: one name per group id.
        log_interval: training figures every this many iterations (and at the end of each epoch).
        params: the run's settings, logged as parameters (values as text).
        tags: tags of the run (values as text).
        artifacts: files logged after every epoch of the engine, those that exist.
        evaluators: engines whose figures are logged after each of their epochs, at their ``state.epoch``
            (under MONAI's ``ValidationHandler``: the trainer's epoch).
        loss_transform: ``engine.state.output`` -> scalar loss.

    Example (``train.json``, beside the run's other handlers in ``prepare_trainer``)::

        "run_tracking": {"_target_": "mnms_groupdistil.tracking.RunTracking", "handlers": "@train#handlers",
                         "group_names": "@group_names", "log_interval": "@log_interval",
                         "params": "@run_settings", "evaluators": ["@test#evaluator"]}
    """

    def __init__(
        self,
        handlers: Sequence[Any],
        group_names: Sequence[str],
        log_interval: int = 1,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        artifacts: Sequence[str | Path] = (),
        evaluators: Sequence[Engine] = (),
        loss_transform: Callable[[Any], Any] = loss_from_output,
    ) -> None:
        trackers = [h for h in handlers if isinstance(h, MLFlowHandler)]
        self.tracker: MLFlowHandler | None = trackers[0] if trackers else None
        self.group_names = [str(g) for g in group_names]
        self.log_now = every(log_interval)
        self.params = dict(params or {})
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.artifacts = [Path(a) for a in artifacts]
        self.evaluators = list(evaluators)
        self.loss_transform = loss_transform

    @property
    def enabled(self) -> bool:
        """Whether the engine is tracked (an ``MLFlowHandler`` is among its handlers)."""
        return self.tracker is not None

    def attach(self, engine: Engine) -> None:
        """Register the records on ``engine`` and the ``evaluators`` (idempotent); nothing when not tracked."""
        if self.tracker is None:
            return
        if isinstance(engine, Trainer) and self.tracker.iteration_logger is None:
            self.tracker.iteration_logger = self.iteration_completed
        attach_once(engine, ((Events.STARTED, self.started), (Events.EPOCH_COMPLETED, self.epoch_completed)))
        for evaluator in self.evaluators:
            attach_once(evaluator, ((Events.EPOCH_COMPLETED, self.evaluation_completed),))

    def _run_id(self) -> str:
        run = self.tracker.cur_run if self.tracker is not None else None
        if run is None:
            raise RuntimeError(
                "RunTracking found no open MLflow run: attach it after the engine whose MLFlowHandler opens one."
            )
        return run.info.run_id

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(name, value, stamp, step) for name, value in scalars.items()]
        self.tracker.client.log_batch(self._run_id(), metrics=metrics)

    def started(self, engine: Engine) -> None:
        """Log the settings not logged yet (a resumed run keeps its first values) and the tags."""
        from mlflow.entities import Param, RunTag

        run_id = self._run_id()
        logged = self.tracker.client.get_run(run_id).data.params
        params = [Param(str(k), str(v)) for k, v in self.params.items() if str(k) not in logged]
        tags = [RunTag(k, v) for k, v in self.tags.items()]
        self.tracker.client.log_batch(run_id, params=params, tags=tags)

    def iteration_completed(self, engine: Engine) -> None:
        """Every ``log_interval`` iterations: the loss, group weights and losses, the learning rates."""
        step = engine.state.iteration
        if not self.log_now(engine, step):
            return
        scalars = training_scalars(engine, self.group_names, self.loss_transform, self.tracker.tag_name)
        optimizer = getattr(engine, "optimizer", None)
        for name in self.tracker.optimizer_param_names if optimizer is not None else ():
            for index, group in enumerate(optimizer.param_groups):
                scalars[f"{name}_group_{index}"] = float(group[name])
        self._log(scalars, step)

    def evaluation_completed(self, evaluator: Engine) -> None:
        """An evaluator's figures (NaN for a group without data is kept: MLflow stores it)."""
        scalars = scalar_metrics(evaluator.state.metrics)
        if scalars:
            self._log(scalars, evaluator.state.epoch)

    def epoch_completed(self, engine: Engine) -> None:
        """Log the ``artifacts`` that exist (a later epoch's copy replaces an earlier one)."""
        run_id = self._run_id()
        for path in self.artifacts:
            if path.is_file():
                self.tracker.client.log_artifact(run_id, str(path))


# ------------------------------------------------------------------------------------------- the grid


def grid_tracking(
    tracking: str | None,
    output_dir: str | Path,
    tracking_uri: str | None = None,
    experiment_name: str = "reproduce",
) -> dict[str, Any] | None:
    """The tracking arguments every run of a grid shares, its experiment created; None without ``tracking``.

    Creating the experiment first spares the grid's runs a race to create it when several start together.

    Args:
        tracking: ``mlflow`` or a tracking settings file (as ``--tracking`` of a bundle run), or None.
        output_dir: the grid's folder; the default store is the SQLite file ``<output_dir>/mlruns.db``.
        tracking_uri: where to track instead (e.g. a tracking server's address).
        experiment_name: the grid's experiment.

    Raises:
        TrackingNotInstalledError: MLflow cannot be imported.
    """
    if tracking is None:
        return None
    require_mlflow()
    import mlflow
    from monai.utils import path_to_sqlite_uri

    uri = tracking_uri or path_to_sqlite_uri(Path(output_dir).resolve() / "mlruns.db")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    _experiment_id(mlflow.MlflowClient(tracking_uri=uri), experiment_name, uri)
    return {"tracking": tracking, "tracking_uri": uri, "experiment_name": experiment_name}


def grid_run_args(settings: Mapping[str, Any] | None, run_name: str, tags: Mapping[str, Any]) -> dict[str, Any]:
    """The tracking arguments of one run of a grid: the shared ``settings`` (:func:`grid_tracking`), the run's
    name and its tags; none when the grid is not tracked (``settings`` None).

    Args:
        settings: the arguments every tracked run of the grid shares, or None.
        run_name: the run's MLflow name (MONAI's handler logs into an unfinished MLflow run of that name, if any).
        tags: e.g. method, split and seed; values as text.
    """
    if settings is None:
        return {}
    return {**settings, "run_name": run_name, "tracking_tags": {str(k): str(v) for k, v in tags.items()}}


def untracked(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` without the :data:`TRACKING_IDS`: what a run trains with, tracked or not."""
    return {k: v for k, v in args.items() if k not in TRACKING_IDS}


def _sqlite_artifacts(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store in ``mlruns`` beside the database, where MONAI's handler keeps them."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).parent / "mlruns").resolve().as_uri()


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_sqlite_artifacts(tracking_uri))


def log_summary(
    tracking_uri: str,
    experiment_name: str,
    files: Sequence[str | Path],
    run_name: str = "summary",
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log ``files`` (a grid's tables and plots) as the artifacts of a new, finished run of ``experiment_name``.

    Args:
        tracking_uri: where the experiment is tracked.
        experiment_name: created if it does not exist (a local SQLite store keeps its artifacts beside it).
        files: the files to log.
        run_name: the run's name.
        tags: tags of the run.

    Returns:
        The new run's id.

    Raises:
        TrackingNotInstalledError: MLflow cannot be imported.
    """
    require_mlflow()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment_name, tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags={str(k): str(v) for k, v in (tags or {}).items()})
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    logger.info(f"logged {len(files)} files to run {run_name!r} of MLflow experiment {experiment_name!r}")
    return run.info.run_id
