"""The grid's plan: which runs train, in which folders, in which order (a teacher before its students)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnms_groupdistil.overrides import parse_overrides
from mnms_groupdistil.tools.registry import DatasetSpec, Method

__all__ = ["Run", "cell_folder", "cell_name", "parse_grid", "plan_runs", "run_key", "submission_order"]


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


def submission_order(runs: Sequence[Run]) -> list[Run]:
    """``runs`` with those that need no teacher first (submitted at once as jobs), then the distilling ones."""
    return [r for r in runs if r.teacher_dir is None] + [r for r in runs if r.teacher_dir is not None]
