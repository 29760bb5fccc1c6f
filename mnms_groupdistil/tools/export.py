"""Export a trained student as a self-contained MONAI bundle that runs without this package.

    python -m mnms_groupdistil.tools.export RUN_DIR BUNDLE_DIR [--checkpoint model_final.pt] [--version 0.1.0] [--onnx]

writes, from the run's ``run_config.json`` (:mod:`mnms_groupdistil.run_settings`), its checkpoint and its
``metrics.json``::

    BUNDLE_DIR/
        configs/inference.json   the source bundle's inference.json, standing alone, with the run's settings
                                 baked in and the network as a MONAI network (no torchvision)
        configs/metadata.json    semver version + changelog, input/output format, the run's test figures
        configs/logging.conf
        models/model.pt          the student's weights (state dict; loads with weights_only=True)
        models/model.ts          TorchScript (and models/model.onnx with --onnx)
        scripts/                 the package modules inference.json uses, copied verbatim
        docs/README.md  LICENSE
        large_files.yml          the files over the model zoo's 25 MB limit, with their sha256 and download
                                 address (``--download_url``), when there are any

so that inside BUNDLE_DIR ``python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN
--output_dir OUT`` needs monai (with pytorch-ignite), torch and nibabel only (SimpleITK for DICOM input; Pillow
for images).

The dataset-specific parts of an export are one :class:`ExportSpec`: which source bundle, which inference
settings come from the run, how the input is described, and the README's words; the rest is shared. The run's
record names its bundle (``run_config.json`` setting ``bundle``; a run without it is an M&Ms run), which picks
the spec: :data:`MNMS` (4D cine volumes in, one prediction per patient out) or :data:`WATERBIRDS` (a folder of
images in, one prediction per image out).
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib.util
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mnms_groupdistil.network_checkpoints import load_weights
from mnms_groupdistil.networks import build_network
from mnms_groupdistil.run_settings import package_versions, read_run_settings
from mnms_groupdistil.tools import registry

__all__ = [
    "MNMS",
    "SPECS",
    "WATERBIRDS",
    "ExportSpec",
    "export_bundle",
    "large_files",
    "monai_network_def",
    "output_format",
    "spec_of",
    "to_monai_state_dict",
]

logger = logging.getLogger(__name__)

PACKAGE = "mnms_groupdistil"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SCRIPTS = "scripts"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_DENSE_LAYER_KEY = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)(\d)\.(.+)$")
_RESNET_LAYERS = {"resnet18": ("ResNetBlock", [2, 2, 2, 2]), "resnet34": ("ResNetBlock", [3, 4, 6, 3])}
_RESNET_LAYERS["resnet50"] = ("ResNetBottleneck", [3, 4, 6, 3])
#: The model zoo's limit on one file of a bundle (25 MB); a larger file is listed in ``large_files.yml``.
MODEL_ZOO_FILE_BYTES = 25 * 1000 * 1000
LARGE_FILES = "large_files.yml"


# ------------------------------------------------------------------------------------------- network


def monai_network_def(name: str, num_classes: int, in_channels: int) -> dict[str, Any]:
    """Bundle config of the MONAI network computing exactly what ``build_network(name, ...)`` computes.

    torchvision's DenseNet-121 and ResNets are MONAI's ``DenseNet121`` and ``ResNet`` (2D, stride-2 stem,
    bias-free downsampling); :func:`to_monai_state_dict` renames the weights. The export checks that both give
    the same logits.

    Raises:
        ValueError: ``name`` has no MONAI counterpart here.
    """
    key = str(name).strip().lower()
    if key == "densenet121":
        return {"_target_": "DenseNet121", "spatial_dims": 2, "in_channels": in_channels, "out_channels": num_classes}
    if key in _RESNET_LAYERS:
        block, layers = _RESNET_LAYERS[key]
        return {
            "_target_": "ResNet",
            "block": f"$monai.networks.nets.resnet.{block}",
            "layers": layers,
            "block_inplanes": [64, 128, 256, 512],
            "spatial_dims": 2,
            "n_input_channels": in_channels,
            "num_classes": num_classes,
            "conv1_t_stride": 2,
            "bias_downsample": False,
        }
    raise ValueError(f"network_name={name!r} cannot be exported; choose one of {['densenet121', *_RESNET_LAYERS]}.")


def to_monai_state_dict(name: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision state dict of ``name`` to the keys of :func:`monai_network_def`'s network."""
    if str(name).strip().lower() != "densenet121":
        return dict(state_dict)  # MONAI's ResNet uses torchvision's names
    out = {}
    for key, value in state_dict.items():
        m = _DENSE_LAYER_KEY.match(key)
        key = f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else key
        out[re.sub(r"^classifier\.", "class_layers.out.", key)] = value
    return out


def _instantiate(definition: Mapping[str, Any]) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser({"imports": ["$import monai"], "network_def": copy.deepcopy(dict(definition))})
    return parser.get_parsed_content("network_def")


# ------------------------------------------------------------------------------------------- scripts


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"module {module} not found")
    return Path(spec.origin)


def _imported_package_modules(module: str) -> list[str]:
    """Package modules that ``module`` imports; they must be relative imports (the copy is not the package)."""
    path = _module_file(module)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found.append(target)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            absolute = [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
            if absolute:
                raise ValueError(
                    f"{path} imports {absolute[0]} absolutely; a module used by inference.json is copied into "
                    "exported bundles, so it must import the package's modules relatively (from .x import y)."
                )
    return found


def script_modules(roots: Sequence[str]) -> list[str]:
    """``roots`` and every package module they import (relatively), transitively; sorted.

    Raises:
        ValueError: a module imports a package module absolutely.
    """
    todo, seen = list(roots), set()
    while todo:
        module = todo.pop()
        if module in seen or module == PACKAGE:
            continue
        seen.add(module)
        todo += _imported_package_modules(module)
    return sorted(seen)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package
        return False


def _config_modules(config: Any) -> set[str]:
    """Package modules named in a config's strings (``_target_`` names and ``$`` expressions)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            for dotted in re.findall(rf"\b{PACKAGE}(?:\.\w+)+", node):
                parts = dotted.split(".")
                for end in range(len(parts), 1, -1):  # longest prefix that is a module
                    if _is_module(".".join(parts[:end])):
                        names.add(".".join(parts[:end]))
                        break

    walk({k: v for k, v in config.items() if k != "imports"})
    return names


def _rename_package(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _rename_package(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_package(v) for v in node]
    if isinstance(node, str):
        return re.sub(rf"\b{PACKAGE}\b", SCRIPTS, node)
    return node


def copy_scripts(modules: Sequence[str], scripts_dir: Path) -> list[Path]:
    """Copy each package module verbatim to ``scripts_dir`` (same relative path) with ``__init__.py`` files."""
    written = []
    version = package_versions((PACKAGE,))[PACKAGE]
    for module in modules:
        relative = _module_file(module).relative_to(PACKAGE_DIR)
        target = scripts_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_module_file(module), target)
        written.append(target)
        for folder in [scripts_dir, *(scripts_dir / p for p in relative.parents if str(p) != ".")]:
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text(f'"""Modules of {PACKAGE} {version}, copied verbatim."""\n')
    return written


# ------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class ExportSpec:
    """What differs between the exports of two bundles.

    Args:
        bundle: folder name of the source bundle under ``bundles/`` (the dataset's,
            :mod:`mnms_groupdistil.tools.registry`).
        settings: ids of the source ``inference.json`` whose values come from the run's recorded settings.
        input_channel_def: channel meaning written to ``network_data_format`` (one entry per input channel).
        readme: ``(settings, metrics, figures) -> str``: the dataset-specific part of ``docs/README.md``.
        use: what the bundle is for, in one sentence (metadata ``intended_use`` and the README).
        packages: distributions the exported configs need besides monai, torch and numpy (their versions go to
            metadata ``required_packages_version``).
        needs: the README's words for what the bundle needs to run.
        limits: the README's words for what the network has not seen and how it treats odd inputs.
        value_range: the network input's value range written to ``network_data_format``; None keeps the source
            bundle's.
    """

    bundle: str
    settings: tuple[str, ...]
    input_channel_def: Callable[[int], dict[str, str]]
    readme: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], str]
    use: str
    packages: tuple[str, ...]
    needs: str
    limits: str
    value_range: tuple[float, ...] | None


def _mnms_readme(settings: Mapping[str, Any], metrics: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    size = settings["image_size"]
    low, high = settings["intensity_percentiles"]
    return f"""## Input and output

Input: 4D short-axis cine MRI, one volume per patient: a NIfTI file `<CODE>_sa.nii.gz` (x, y, slice,
phase), or a folder holding the DICOM series (one file per slice position and phase; arranged by
slice position and trigger time; SimpleITK needed). A volume's intensities are clipped to its
percentiles {low} and {high} (over all slices and phases) and rescaled to [0, 1]; every slice at
every phase (`--frame_stride N` for every N-th phase) is cropped or zero-padded to {size} x {size}
and classified; a volume's frames are combined by majority vote.

Output in `--output_dir`: `predictions.csv` (subject, prediction, frames, vendor and manufacturer
for DICOM input, votes and mean probability per class) and `frame_predictions.csv`; for each DICOM
series, `<subject>_SR.dcm`: a DICOM Comprehensive SR (an Imaging Measurement Report) in the series'
study, referencing every image of the series, with the predicted class, its mean probability over
the frames, the number of frames voted, the vendor group and this bundle's name and version, for
PACS (highdicom needed; `--dicom_sr False` for the CSVs only).
"""


MNMS = ExportSpec(
    bundle=registry.MNMS.bundle,
    settings=("network_name", "in_channels", "class_names", "image_size", "intensity_percentiles"),
    input_channel_def=lambda n: {str(i): "image" if n == 1 else f"image (copy {i + 1} of {n})" for i in range(n)},
    readme=_mnms_readme,
    use="Research on vendor-robust classification of HCM vs normal from cine MRI; not for clinical use.",
    packages=("nibabel", "pytorch-ignite"),
    needs="monai (with pytorch-ignite), torch and nibabel (SimpleITK and highdicom for DICOM input)",
    limits="has seen no other scanners, sites or diseases; its figures hold for that test data only. Inputs are "
    "classified frame by frame; a volume whose frames do not show the short-axis heart gets a prediction all the "
    "same.",
    value_range=(0, 1),
)


def _waterbirds_readme(settings: Mapping[str, Any], metrics: Mapping[str, Any], figures: Mapping[str, Any]) -> str:
    size, resize = settings["image_size"], settings["resize_size"]
    classes = ", ".join(settings["class_names"])
    return f"""## Input and output

Input: an image file, or a folder searched recursively for images (`.jpg`, `.jpeg`, `.png`, `.bmp`,
`.tif`, `.tiff`, `.webp`); every image must decode completely. Each image is converted to RGB,
resized to {resize} x {resize}, centre-cropped to {size} x {size} and normalised with the ImageNet mean
and standard deviation, then classified ({classes}).

Output in `--output_dir`: `predictions.csv`, one row per image: `image` (its path relative to the
input folder), `prediction` and `probability_<class>` for every class.
"""


WATERBIRDS = ExportSpec(
    bundle=registry.WATERBIRDS.bundle,
    settings=("network_name", "in_channels", "class_names", "image_size", "resize_size"),
    input_channel_def=lambda n: {str(i): "RGB"[i] if n == 3 else f"channel {i}" for i in range(n)},
    readme=_waterbirds_readme,
    use="Research on group-robust model compression only (landbird vs waterbird, robust to the background).",
    packages=("nibabel", "pytorch-ignite", "pillow"),
    needs="monai (with pytorch-ignite), torch, Pillow and nibabel",
    limits="has seen no other kinds of birds, backgrounds or cameras; its figures hold for that test data "
    "only. Every image gets a prediction, whether it shows a bird or not.",
    value_range=None,
)

#: Source bundle folder -> its export spec.
SPECS: dict[str, ExportSpec] = {spec.bundle: spec for spec in (MNMS, WATERBIRDS)}


def spec_of(settings: Mapping[str, Any]) -> ExportSpec:
    """The spec of the bundle a run's recorded ``settings`` name (``bundle``; none recorded: M&Ms).

    Raises:
        ValueError: the recorded bundle has no export spec.
    """
    name = settings.get("bundle") or MNMS.bundle
    if name not in SPECS:
        raise ValueError(f"the run's bundle {name!r} cannot be exported; exportable bundles: {sorted(SPECS)}.")
    return SPECS[name]


# ------------------------------------------------------------------------------------------- export


def _is_figure(value: Any) -> bool:
    """A number a table or ``eval_metrics`` can hold (``metrics.json`` writes a group without patients as null)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
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


def _readme(
    spec: ExportSpec, settings, metrics, figures, run_name: str, version: str, checkpoint: str, amp: Any
) -> str:
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

A student network trained with `{PACKAGE}` and exported with `python -m {PACKAGE}.export`. This
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


def output_format(class_names: Sequence[str]) -> dict[str, Any]:
    """``network_data_format.outputs.pred`` of an exported bundle: class probabilities, one channel per class.

    The network computes logits; the exported ``inference.json`` turns them into probabilities in its
    ``postprocessing`` (a softmax), which is what the bundle's output is, and MONAI's tools read it as the
    bundle specification's ``probabilities`` type with ``classes`` format.
    """
    names = [str(c) for c in class_names]
    return {
        "type": "probabilities",
        "format": "classes",
        "num_channels": len(names),
        "spatial_shape": [len(names)],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": False,
        "channel_def": {str(i): c for i, c in enumerate(names)},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files(
    bundle_dir: str | Path, download_url: str | None = None, limit_bytes: int = MODEL_ZOO_FILE_BYTES
) -> list[dict[str, str]]:
    """The ``large_files.yml`` entries of ``bundle_dir``: every file larger than ``limit_bytes``.

    Each entry holds ``path`` (relative to the bundle, ``/``-separated), ``url`` (``download_url`` + ``/`` +
    that path; empty without ``download_url``, to be filled in), ``hash_val`` (the file's sha256) and
    ``hash_type`` ``sha256``: the fields ``python -m monai.bundle download_large_files`` reads.
    """
    bundle_dir = Path(bundle_dir)
    base = (download_url or "").rstrip("/")
    entries = []
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        if path.stat().st_size > limit_bytes:
            relative = path.relative_to(bundle_dir).as_posix()
            entries.append(
                {
                    "path": relative,
                    "url": f"{base}/{relative}" if base else "",
                    "hash_val": _sha256(path),
                    "hash_type": "sha256",
                }
            )
    return entries


def write_large_files(entries: Sequence[Mapping[str, str]], path: Path) -> Path:
    """Write ``entries`` (:func:`large_files`) as the model zoo's ``large_files.yml``; every value double-quoted."""
    lines = ["large_files:"]
    for entry in entries:
        for i, (key, value) in enumerate(entry.items()):
            lines.append(f"  {'-' if i == 0 else ' '} {key}: {json.dumps(str(value))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    figures = _figures(metrics)

    name, num_classes, in_channels = settings["network_name"], len(settings["class_names"]), settings["in_channels"]
    image_size = int(settings["image_size"])
    student = build_network(name, num_classes, in_channels)
    trained = load_weights(student, run_dir / checkpoint, device="cpu", setting="--checkpoint").eval()
    network_def = monai_network_def(name, num_classes, in_channels)
    network = _instantiate(network_def).eval()
    network.load_state_dict(to_monai_state_dict(name, trained.state_dict()), strict=True)
    example = torch.rand(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((network(example) - trained(example)).abs().max())
    if difference > 1e-4:
        raise ValueError(f"the exported {name} differs from the trained one by {difference:.3g} on a test input.")

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
    modules = script_modules(sorted(_config_modules(config)))
    imports = [i for i in config.get("imports", []) if not re.search(rf"\b{PACKAGE}\b", i)]
    config["imports"] = imports + [f"$import {m}" for m in [PACKAGE, *modules]]  # `$import a.b` binds no `a`
    config = _rename_package(config)

    metadata = json.loads((source / "configs" / "metadata.json").read_text())
    versions = package_versions(("monai", "torch", "numpy", *spec.packages))
    metadata.update(
        {
            "version": version,
            "changelog": {
                version: f"exported from run {run_dir.name} ({checkpoint}) on "
                f"{datetime.now(timezone.utc).date().isoformat()}: {settings.get('mode')} {name}, "
                + (f"split {settings['split']}, " if "split" in settings else "")
                + f"seed {settings.get('seed')}, {settings.get('max_epochs')} epochs"
            },
            "monai_version": versions["monai"],
            "pytorch_version": versions["torch"],
            "numpy_version": versions["numpy"],
            "required_packages_version": {k: versions[k] for k in spec.packages},
            "eval_metrics": figures["metrics"],
            "intended_use": spec.use,
        }
    )
    data_format = metadata["network_data_format"]
    data_format["inputs"]["image"].update(
        {
            "num_channels": in_channels,
            "spatial_shape": [image_size, image_size],
            "channel_def": spec.input_channel_def(in_channels),
        }
    )
    if spec.value_range is not None:
        data_format["inputs"]["image"]["value_range"] = list(spec.value_range)
    data_format["outputs"]["pred"] = output_format(settings["class_names"])

    (bundle_dir / "configs").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "models").mkdir()
    (bundle_dir / "docs").mkdir()
    (bundle_dir / "configs" / "inference.json").write_text(json.dumps(config, indent=4) + "\n")
    (bundle_dir / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")
    for extra in ("configs/logging.conf", "LICENSE"):
        if (source / extra).is_file():
            shutil.copyfile(source / extra, bundle_dir / extra)
    copy_scripts(modules, bundle_dir / SCRIPTS)
    torch.save(network.state_dict(), bundle_dir / "models" / "model.pt")

    from monai.networks.utils import convert_to_onnx, convert_to_torchscript

    convert_to_torchscript(
        network,
        filename_or_obj=str(bundle_dir / "models" / "model.ts"),
        extra_files={
            "metadata.json": json.dumps(metadata).encode(),
            "inference.json": json.dumps(config).encode(),
        },
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
            filename=str(bundle_dir / "models" / "model.onnx"),
            verify=True,
            device="cpu",
            use_trace=True,
            rtol=1e-4,
            atol=1e-5,
            dynamo=False,
        )
    readme = _readme(spec, settings, metrics, figures, run_dir.name, version, checkpoint, config.get("amp"))
    (bundle_dir / "docs" / "README.md").write_text(readme)
    _list_large_files(bundle_dir, download_url)
    logger.info("exported %s (%s, %d scripts) to %s", run_dir, name, len(modules), bundle_dir)
    return bundle_dir


def _list_large_files(bundle_dir: Path, download_url: str | None) -> None:
    """Write ``large_files.yml`` when the bundle holds a file over the model zoo's limit, and say what to do."""
    entries = large_files(bundle_dir, download_url)
    if not entries:
        return
    write_large_files(entries, bundle_dir / LARGE_FILES)
    names = ", ".join(e["path"] for e in entries)
    todo = (
        "" if download_url else "; their download addresses are empty: fill in each url, or export with --download_url"
    )
    logger.info(
        "%s lists %s (over the model zoo's %d MB per file): upload them and leave them out of a model-zoo "
        "submission%s.",
        bundle_dir / LARGE_FILES,
        names,
        MODEL_ZOO_FILE_BYTES // 10**6,
        todo,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the training run's output_dir")
    parser.add_argument("bundle_dir", help="a new or empty folder for the bundle")
    parser.add_argument("--checkpoint", default="model_final.pt", help="weights file in RUN_DIR (default: %(default)s)")
    parser.add_argument("--version", default="0.1.0", help="the bundle's semantic version (default: %(default)s)")
    parser.add_argument("--onnx", action="store_true", help="also write models/model.onnx")
    parser.add_argument("--source_bundle", default=None, help="bundle whose inference.json is exported")
    parser.add_argument(
        "--download_url",
        default=None,
        help="address the files over the model zoo's 25 MB will be downloaded from: large_files.yml gives each "
        "URL/<its path in the bundle>",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = export_bundle(
            args.run_dir,
            args.bundle_dir,
            args.checkpoint,
            args.version,
            args.onnx,
            None,
            args.source_bundle,
            args.download_url,
        )
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    print(out)


if __name__ == "__main__":
    main()
