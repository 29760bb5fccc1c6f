"""The export itself: a run's student, its inference config, metadata, scripts, models and README written as a
bundle folder."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from mnms_groupdistil.run_settings import read_run_settings
from mnms_groupdistil.tools import registry

from .large_files import list_large_files
from .metadata import exported_metadata
from .networks import converted_network
from .readme import readme_text, test_figures
from .scripts import SCRIPTS, copy_scripts, standalone_config
from .specs import ExportSpec, spec_of

__all__ = ["export_bundle"]

logger = logging.getLogger(__name__)

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def export_bundle(
    run_dir: str | Path,
    bundle_dir: str | Path,
    checkpoint: str = "model_final.pt",
    version: str = "0.1.0",
    onnx: bool = False,
    spec: ExportSpec | None = None,
    source_bundle: str | Path | None = None,
    download_url: str | None = None,
) -> Path:
    """Write the bundle of the network trained in ``run_dir`` to ``bundle_dir``.

    Args:
        run_dir: a training run's ``output_dir`` (with ``run_config.json`` and ``checkpoint``).
        bundle_dir: a new or empty folder.
        checkpoint: the weights file in ``run_dir`` (default: the last epoch's).
        version: the bundle's semantic version.
        onnx: also write ``models/model.onnx`` (needs the onnx package).
        spec: the dataset-specific parts; default: the spec of the bundle the run records (:func:`spec_of`).
        source_bundle: the bundle whose ``inference.json`` is exported; default ``bundles/<spec.bundle>``.
        download_url: where the files over the model zoo's 25 MB will be downloadable (``large_files.yml``
            gives each ``download_url/<its path in the bundle>``); None leaves the addresses to fill in.

    Returns:
        ``bundle_dir``.

    Raises:
        ValueError: ``run_dir`` lacks its record or checkpoint, ``bundle_dir`` is not empty, ``version`` is not
            semver, or the exported network disagrees with the trained one.
    """
    run_dir, bundle_dir = Path(run_dir), Path(bundle_dir)
    settings, spec, source = _checked_inputs(run_dir, bundle_dir, checkpoint, version, spec, source_bundle)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    figures = test_figures(metrics)
    network_def, network, example = converted_network(settings, run_dir / checkpoint)

    config = json.loads((source / "configs" / "inference.json").read_text())
    config.update({k: settings[k] for k in spec.settings})
    config.update(
        {
            "network_def": network_def,
            "output_dir": "$@bundle_root + '/predictions'",
            "ckpt_path": "$@bundle_root + '/models/model.pt'",
        }
    )
    if "run_dir" in config:  # the source reads the run's settings from it; they are baked in here
        config["run_dir"] = None
    config, modules = standalone_config(config)
    source_metadata = json.loads((source / "configs" / "metadata.json").read_text())
    metadata = exported_metadata(source_metadata, spec, settings, figures, version, f"{run_dir.name} ({checkpoint})")

    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir()
    (bundle_dir / "docs").mkdir()
    (bundle_dir / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")
    for extra in ("configs/logging.conf", "LICENSE"):
        if (source / extra).is_file():
            shutil.copyfile(source / extra, bundle_dir / extra)
    copy_scripts(modules, bundle_dir / SCRIPTS)
    _write_models(network, example, bundle_dir / "models", {"metadata.json": metadata, "inference.json": config}, onnx)
    readme = readme_text(spec, settings, metrics, figures, run_dir.name, version, checkpoint, config.get("amp"))
    (bundle_dir / "docs" / "README.md").write_text(readme)
    list_large_files(bundle_dir, download_url)
    logger.info("exported %s (%s, %d scripts) to %s", run_dir, settings["network_name"], len(modules), bundle_dir)
    return bundle_dir


def _checked_inputs(
    run_dir: Path,
    bundle_dir: Path,
    checkpoint: str,
    version: str,
    spec: ExportSpec | None,
    source_bundle: str | Path | None,
) -> tuple[dict[str, Any], ExportSpec, Path]:
    """``(the run's settings, its spec, the source bundle)``, once every input of :func:`export_bundle` is usable.

    Raises:
        ValueError: as :func:`export_bundle` says, naming the file or option to fix.
    """
    if not _SEMVER.match(str(version)):
        raise ValueError(f"version={version!r} is not a semantic version MAJOR.MINOR.PATCH, e.g. 0.1.0.")
    if not (run_dir / "run_config.json").is_file():
        raise ValueError(
            f"{run_dir} has no run_config.json: pass the output_dir of a training run (runs record their settings "
            "when they start); an older run can be trained again to get one."
        )
    settings = read_run_settings(run_dir)
    spec = spec or spec_of(settings)
    source = Path(source_bundle) if source_bundle else registry.bundles_dir() / spec.bundle
    missing = [k for k in spec.settings if k not in settings]
    if missing:
        raise ValueError(f"{run_dir / 'run_config.json'} lacks the settings {missing} that inference needs.")
    if not (run_dir / checkpoint).is_file():
        raise ValueError(f"{run_dir} has no checkpoint {checkpoint!r}; pass --checkpoint with a file in the run.")
    if not (source / "configs" / "inference.json").is_file():
        raise ValueError(f"source bundle {source} has no configs/inference.json; pass --source_bundle.")
    if bundle_dir.exists() and any(bundle_dir.iterdir()):
        raise ValueError(f"bundle_dir {bundle_dir} is not empty; choose a new folder.")
    return settings, spec, source


def _write_models(
    network: torch.nn.Module, example: torch.Tensor, models: Path, extra: dict[str, Any], onnx: bool
) -> None:
    """``model.pt`` (state dict), ``model.ts`` (TorchScript holding the ``extra`` JSON files) and, with ``onnx``,
    ``model.onnx`` in ``models``; each converted model is checked against ``network`` on ``example``."""
    from monai.networks.utils import convert_to_onnx, convert_to_torchscript

    torch.save(network.state_dict(), models / "model.pt")
    convert_to_torchscript(
        network,
        filename_or_obj=str(models / "model.ts"),
        extra_files={name: json.dumps(content).encode() for name, content in extra.items()},
        verify=True,
        inputs=[example],
        device="cpu",
        rtol=1e-4,
        atol=1e-5,
    )
    if onnx:
        convert_to_onnx(
            network,
            inputs=[example],
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": [0], "pred": [0]},
            filename=str(models / "model.onnx"),
            verify=True,
            device="cpu",
            use_trace=True,
            rtol=1e-4,
            atol=1e-5,
            dynamo=False,
        )
