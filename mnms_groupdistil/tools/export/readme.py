"""The exported bundle's ``docs/README.md`` and the run's figures on test data it reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .scripts import PACKAGE
from .specs import ExportSpec

__all__ = ["readme_text", "test_figures"]


def _is_figure(value: Any) -> bool:
    """A number a table or ``eval_metrics`` can hold (``metrics.json`` writes a group without patients as null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The run's figures on test data: finite ``test_*`` metrics and the per-group ``test_*`` entries."""
    scalars = {k: v for k, v in (metrics.get("metrics") or {}).items() if k.startswith("test_") and _is_figure(v)}
    per_group = {
        group: {k: v for k, v in values.items() if k.startswith("test_")}
        for group, values in (metrics.get("per_group") or {}).items()
        if isinstance(values, Mapping)
    }
    return {"metrics": scalars, "per_group": {g: v for g, v in per_group.items() if v}}


def _fmt(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) and value == value else "-"


def readme_text(
    spec: ExportSpec,
    settings: Mapping[str, Any],
    metrics: Mapping[str, Any],
    figures: Mapping[str, Any],
    run_name: str,
    version: str,
    checkpoint: str,
    amp: Any,
) -> str:
    """The exported bundle's ``docs/README.md``: how to run it, its input and output, its training and figures.

    Args:
        spec: the dataset's spec (its input and output text, use, needs and limits).
        settings: the run's recorded settings.
        metrics: the run's ``metrics.json``.
        figures: its figures on test data (:func:`test_figures`).
        run_name: the run folder's name.
        version: the bundle's version.
        checkpoint: the weights file exported.
        amp: the source ``inference.json``'s ``amp`` setting.
    """
    groups = sorted(figures["per_group"])
    columns = sorted({k for v in figures["per_group"].values() for k in v})
    if groups:
        table = "| group | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
        table += "".join(
            f"| {g} | " + " | ".join(_fmt(figures["per_group"][g].get(c)) for c in columns) + " |\n" for g in groups
        )
        table += "".join(f"\n{k}: {_fmt(v)}" for k, v in sorted(figures["metrics"].items())) + "\n"
        results = f"Accuracy (%) on the run's test data, from its `metrics.json` (epoch {metrics.get('epoch')}):\n\n"
        results += table
    else:
        results = "The run's `metrics.json` holds no `test_*` figures, so none are reported here.\n"
    if amp is False:
        precision = "`--amp true` for automatic mixed precision on a GPU"
    else:  # the source's default: on when CUDA is available
        precision = "on a GPU it runs with automatic mixed precision"
    keys = ("mode", "network_name", "teacher_name", "split", "seed", "max_epochs", "batch_size", "learning_rate")
    trained = "\n".join(f"- {k}: `{settings.get(k)}`" for k in keys if k in settings)
    return f"""# {settings.get("network_name")} student exported from run `{run_name}` (version {version})

A student network trained with `{PACKAGE}` and exported with `python -m {PACKAGE}.tools.export`. This
folder is a MONAI bundle that needs only {spec.needs}; `scripts/` holds the code its configs use,
copied from `{PACKAGE}`.

    python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN --output_dir OUT

(`IN`: a file or a folder; `--device cpu` to force the CPU; {precision}). Check the network
against the metadata, or re-export it:

    python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json \\
        --config_file configs/inference.json
    python -m monai.bundle ckpt_export network_def --filepath model.ts --ckpt_file models/model.pt \\
        --key_in_ckpt "" --meta_file configs/metadata.json --config_file configs/inference.json

The network computes logits; `postprocessing` in `configs/inference.json` turns them into class
probabilities (a softmax), the bundle's output `pred` (`metadata.json`: type `probabilities`,
format `classes`). `large_files.yml`, where present, lists the files over the model zoo's 25 MB
per file with their sha256 and download address: upload them, check each `url`, and leave them
out of a model-zoo submission; `python -m monai.bundle download_large_files --bundle_path .`
fetches them back.

{spec.readme(settings, metrics, figures)}
## How it was trained

Weights: `{checkpoint}` of the run (`models/model.pt`, `models/model.ts`). Settings recorded by
the run (`run_config.json`):

{trained}

## Results

{results}
## Intended use and limits

{spec.use} The network was trained on the data and splits named above and {spec.limits}
"""
