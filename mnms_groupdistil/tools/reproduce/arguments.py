"""What one run of the grid is given: its config files and settings (the ``--args_file`` of the bundle runner),
and the values those resolve to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tools.registry import DatasetSpec, Method, bundles_dir

from .plan import Run

__all__ = ["BUNDLES_DIR", "GRID_IDS", "bundle_args", "config_files", "resolve_setting", "scoped_config"]

#: Bundle folders of a source checkout (``<repository>/bundles``).
BUNDLES_DIR = bundles_dir()

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
