"""Training throughput of the bundles against the speed of their networks alone.

``python -m mnms_groupdistil.tools.benchmark`` measures, in one run on one device, for each bundle's
teacher/student pair (M&Ms: ResNet-18 -> DenseNet-121; Waterbirds: ResNet-50 -> ResNet-18):

* ``ceiling_img_s``: the model-only ceiling. The same networks, batch size, image size, precision
  and memory format, random inputs already on the device, and the plain KD loss written directly
  with torch (no group bookkeeping, no data loading, no handlers).
* ``loss_path_img_s``: the same loop with the project's loss path (``distillation_loss`` and a
  robust ``GroupWeightedLoss``), so ``loss_path_over_plain`` is the loss path's own cost.
* ``end_to_end_img_s``: the real bundle trainer (the bundle's ``train.json`` through MONAI's
  ``ConfigWorkflow``, GroupDistil) on a generated cohort in the dataset's real layout, validation off.
  ``ratio`` = ``end_to_end_img_s / ceiling_img_s``.
* ``kd_end_to_end_img_s`` and ``groupdistil_over_kd``: the same with ``train_kd.json``; the ratio
  of GroupDistil's to KD's time per training image (= the step-time ratio at equal batch sizes).
* ``data_pipeline_img_s``: the bundle's train dataloader alone, no model.
* ``host_peak_rss_mib`` (main process, Linux) and ``device_peak_mib`` (CUDA only) per configuration.

Throughput counts only the timed iterations: the clock starts after ``warmup`` iterations and
stops after ``iterations`` more; on CUDA both ends wait for the device (``torch.cuda.synchronize``).
The end-to-end time includes everything the trainer does between those points (data loading,
handlers, epoch ends), which is what training costs.

Example::

    python -m mnms_groupdistil.tools.benchmark --bundle mnms --image_size 64 --batch_size 32 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mnms_groupdistil.acceleration import autocast_dtype, grad_scaler_needed
from mnms_groupdistil.losses import GroupWeightedLoss, GroupWeights, distillation_loss
from mnms_groupdistil.networks import build_network
from mnms_groupdistil.overrides import check_overrides, parse_overrides
from mnms_groupdistil.tables import text_table
from mnms_groupdistil.tools import registry

__all__ = ["benchmark_bundle", "ceiling", "main", "plain_kd_loss"]


def plain_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """The batch-mean Hinton loss written directly with torch: the ceiling's loss.

    ``(1 - alpha) * CE(target, softmax(zS)) + alpha * T^2 * KL(softmax(zT / T) || softmax(zS / T))``.
    """
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    hard = F.cross_entropy(student_logits, target)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peaks(device: torch.device) -> None:
    """Start new peak-memory records: CUDA's allocator, and the process's RSS high-water mark (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peaks(device: torch.device) -> dict[str, float | None]:
    host = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                host = int(line.split()[1]) / 1024
    except OSError:
        pass
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"host_peak_rss_mib": host, "device_peak_mib": gpu}


def ceiling(
    student_name: str,
    teacher_name: str,
    num_classes: int,
    in_channels: int,
    batch_size: int,
    image_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    warmup: int = 2,
    iterations: int = 5,
    loss: str = "plain",
    num_groups: int = 3,
) -> float:
    """Images per second of the bare training step: teacher forward, student forward and backward, Adam.

    Args:
        student_name, teacher_name: network names for :func:`~mnms_groupdistil.networks.build_network`.
        num_classes, in_channels: as the bundle's networks.
        batch_size, image_size: the inputs' shape ``(batch_size, in_channels, image_size, image_size)``.
        device: where everything runs; the random inputs are made there once.
        autocast_dtype: run the forward passes under ``torch.autocast`` with this dtype (None: fp32).
            float16 on CUDA uses a gradient scaler, as the bundles do.
        channels_last: networks and inputs in channels-last memory format.
        warmup, iterations: untimed and timed steps.
        loss: ``"plain"`` (:func:`plain_kd_loss`) or ``"project"`` (``distillation_loss`` with a robust
            ``GroupWeightedLoss``, one group per batch as in Algorithm 1).
        num_groups: groups of the project's loss.

    Raises:
        ValueError: unknown ``loss`` or non-positive counts.
    """
    if loss not in ("plain", "project"):
        raise ValueError(f"loss={loss!r} is not one of ('plain', 'project').")
    if warmup < 1 or iterations < 1:
        raise ValueError(f"warmup and iterations must be >= 1, got {warmup} and {iterations}.")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student = build_network(student_name, num_classes, in_channels).to(device, memory_format=memory_format).train()
    teacher = build_network(teacher_name, num_classes, in_channels).to(device, memory_format=memory_format).eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, in_channels, image_size, image_size, generator=generator)
    images = images.to(device).contiguous(memory_format=memory_format)
    labels = torch.randint(num_classes, (batch_size,), generator=generator).to(device)
    groups = torch.zeros(batch_size, dtype=torch.long, device=device)
    objective = GroupWeightedLoss(GroupWeights(num_groups, step_size=0.01), robust=True)
    scaler = torch.amp.GradScaler(device.type) if grad_scaler_needed(autocast_dtype, device) else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            student_logits = student(images)
            with torch.no_grad():
                teacher_logits = teacher(images)
            if loss == "plain":
                value = plain_kd_loss(student_logits, teacher_logits, labels)
            else:
                value = objective(distillation_loss(student_logits, teacher_logits, labels), groups)
        if scaler is None:
            value.backward()
            optimizer.step()
        else:
            scaler.scale(value).backward()
            scaler.step(optimizer)
            scaler.update()

    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    _synchronize(device)
    return batch_size * iterations / (time.perf_counter() - start)


class _IterationTimer:
    """Times a trainer's iterations after ``warmup`` of them, then stops the trainer."""

    def __init__(self, warmup: int, iterations: int, device: torch.device) -> None:
        self.warmup, self.iterations, self.device = warmup, iterations, device
        self.seen = 0
        self.images = 0
        self.start: float | None = None
        self.seconds: float | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        from mnms_groupdistil.handlers.events import attach_once

        attach_once(engine, ((Events.ITERATION_COMPLETED, self.iteration_completed),))

    def iteration_completed(self, engine: Any) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            _synchronize(self.device)
            self.start = time.perf_counter()
        elif self.seen > self.warmup:
            self.images += len(engine.state.batch["image"])
            if self.seen == self.warmup + self.iterations:
                _synchronize(self.device)
                self.seconds = time.perf_counter() - self.start
                engine.terminate()

    def images_per_second(self) -> float:
        if self.seconds is None:
            raise RuntimeError(
                f"the trainer stopped after {self.seen} iterations, before the {self.warmup} warm-up and "
                f"{self.iterations} timed ones: the training set is too small for these counts."
            )
        return self.images / self.seconds


def _data_pipeline(loader: Any, warmup: int, iterations: int) -> float:
    """Images per second of ``loader`` alone (epochs chained), after ``warmup`` batches."""

    def batches():
        while True:
            yield from loader

    stream = batches()
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    images = sum(len(next(stream)["image"]) for _ in range(iterations))
    return images / (time.perf_counter() - start)


def _workflow(configs: Sequence[Path], overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs],
        meta_file=str(Path(configs[0]).parent / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    return workflow


#: Settings of the timed trainings: the timer stops the trainer, no validation, no resume.
_TIMED_RUN: dict[str, Any] = {"max_epochs": 10**6, "val_interval": 10**6, "resume": False}


def benchmark_bundle(
    bundle: str,
    device: str | torch.device,
    image_size: int,
    batch_size: int,
    amp: bool = False,
    channels_last: bool = False,
    num_workers: int | None = None,
    warmup: int = 2,
    iterations: int = 5,
    cohort: str = "demo",
    bundles_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure one configuration of one bundle (see the module docstring for the fields).

    ``bundle`` is a dataset of :data:`mnms_groupdistil.tools.registry.DATASETS` (``mnms``, ``waterbirds``): its
    bundle folder under ``bundles_dir`` (default :func:`~mnms_groupdistil.tools.registry.bundles_dir`) and its
    generated cohort (preset ``cohort``). ``settings`` are further bundle ids for the end-to-end runs and the
    data pipeline (e.g. ``{"augment_on_device": True}``); they are recorded in the result.

    Raises:
        ValueError: an unknown bundle, or one whose configs are not in ``bundles_dir``; a ``settings`` id
            that the bundle does not define (:class:`~mnms_groupdistil.errors.UnknownSettingError`).
    """
    spec, configs = _bundle_configs(bundle, bundles_dir)
    check_overrides(str(configs / "train.json"), settings or {}, where="--override")
    device = torch.device(device)
    autocast = autocast_dtype(amp, device)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        dataset_dir = spec.write_cohort(tmp / "data", cohort)
        names, num_classes, num_groups = _networks_of(configs)
        teacher_ckpt = tmp / "teacher.pt"
        torch.save(build_network(names["teacher_name"], num_classes, names["in_channels"]).state_dict(), teacher_ckpt)
        overrides: dict[str, Any] = {
            **spec.cohort_settings,
            "dataset_dir": str(dataset_dir),
            "teacher_ckpt": str(teacher_ckpt),
            **_TIMED_RUN,
            "device": str(device),
            **dict(image_size=image_size, batch_size=batch_size, amp=amp, channels_last=channels_last),
            **({} if num_workers is None else {"num_workers": num_workers}),
            **(settings or {}),
        }
        result: dict[str, Any] = {
            "bundle": bundle,
            "student": names["network_name"],
            "teacher": names["teacher_name"],
            "image_size": image_size,
            "batch_size": batch_size,
            "settings": dict(settings or {}),
            "amp": amp,
            "amp_dtype": str(autocast).replace("torch.", "") if autocast else None,
            "channels_last": channels_last,
            "cohort": cohort,
            "warmup": warmup,
            "iterations": iterations,
        }
        _reset_peaks(device)
        shape = dict(
            student_name=names["network_name"],
            teacher_name=names["teacher_name"],
            num_classes=num_classes,
            in_channels=names["in_channels"],
            batch_size=batch_size,
            image_size=image_size,
            device=device,
            autocast_dtype=autocast,
            channels_last=channels_last,
            warmup=warmup,
            iterations=iterations,
            num_groups=num_groups,
        )
        result["ceiling_img_s"] = ceiling(**shape, loss="plain")
        result["loss_path_img_s"] = ceiling(**shape, loss="project")
        result.update(_end_to_end(configs, overrides, tmp, warmup, iterations, device))
        result["ratio"] = result["end_to_end_img_s"] / result["ceiling_img_s"]
        result["loss_path_over_plain"] = result["ceiling_img_s"] / result["loss_path_img_s"]
        result["groupdistil_over_kd"] = result["kd_end_to_end_img_s"] / result["end_to_end_img_s"]
        result.update(_peaks(device))
    return result


def _bundle_configs(bundle: str, bundles_dir: str | Path | None) -> tuple[registry.DatasetSpec, Path]:
    """The dataset of ``bundle`` and its bundle's ``configs`` folder.

    Raises:
        ValueError: an unknown bundle, or one whose ``train.json`` is not in ``bundles_dir``.
    """
    if bundle not in registry.DATASETS:
        raise ValueError(f"bundle={bundle!r} is not one of {sorted(registry.DATASETS)}.")
    spec = registry.DATASETS[bundle]
    configs = Path(bundles_dir or registry.bundles_dir()) / spec.bundle / "configs"
    if not (configs / "train.json").is_file():
        raise ValueError(
            f"bundle={bundle!r}: {configs / 'train.json'} does not exist; this checkout has no "
            f"{spec.bundle} bundle yet. Benchmark one of the bundles present."
        )
    return spec, configs


def _networks_of(configs: Path) -> tuple[dict[str, Any], int, int]:
    """``({network_name, teacher_name, in_channels}, classes, groups)`` as the bundle's ``train.json`` sets them."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(configs / "train.json"))
    names = {k: parser.get_parsed_content(k) for k in ("network_name", "teacher_name", "in_channels")}
    return names, len(parser.get_parsed_content("class_names")), len(parser.get_parsed_content("group_names"))


def _end_to_end(
    configs: Path, overrides: dict[str, Any], tmp: Path, warmup: int, iterations: int, device: torch.device
) -> dict[str, float]:
    """The bundle's GroupDistil and KD trainings timed, and its data pipeline alone (images per second)."""
    result = {}
    for mode, extra in (("groupdistil", []), ("kd", [configs / "train_kd.json"])):
        workflow = _workflow([configs / "train.json", *extra], {**overrides, "output_dir": str(tmp / f"run_{mode}")})
        if mode == "groupdistil":
            loader = workflow.parser.get_parsed_content("train#dataloader")
            result["data_pipeline_img_s"] = _data_pipeline(loader, warmup, iterations)
        timer = _IterationTimer(warmup, iterations, device)
        timer.attach(workflow.parser.get_parsed_content("train#trainer"))
        workflow.run()
        workflow.finalize()
        result[f"{mode}_end_to_end_img_s"] = timer.images_per_second()
    result["end_to_end_img_s"] = result.pop("groupdistil_end_to_end_img_s")
    return result


def describe_machine(device: torch.device) -> dict[str, Any]:
    """The device, CPU and library versions, and the host's load while measuring."""
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else None
    except OSError:
        info["cpu_model"] = None
    info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


COLUMNS = (
    ("bundle", "bundle", "{}"),
    ("amp_dtype", "precision", "{}"),
    ("ceiling_img_s", "ceiling img/s", "{:.1f}"),
    ("end_to_end_img_s", "GroupDistil img/s", "{:.1f}"),
    ("ratio", "e2e/ceiling", "{:.0%}"),
    ("kd_end_to_end_img_s", "KD img/s", "{:.1f}"),
    ("groupdistil_over_kd", "GD/KD time", "{:.3f}"),
    ("loss_path_over_plain", "loss path", "{:.3f}"),
    ("data_pipeline_img_s", "data img/s", "{:.1f}"),
    ("host_peak_rss_mib", "host MiB", "{:.0f}"),
    ("device_peak_mib", "device MiB", "{:.0f}"),
)


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per configuration, the columns of :data:`COLUMNS` (:func:`~mnms_groupdistil.tables.text_table`)."""
    rows = []
    for r in results:
        row = []
        for key, _, fmt in COLUMNS:
            value = r.get(key)
            if key == "amp_dtype" and value is None:
                value = "fp32"
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    return text_table([title for _, title, _ in COLUMNS], rows)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnms_groupdistil.tools.benchmark", description=__doc__.split("\n\n")[0]
    )
    bundles = sorted(registry.DATASETS)
    parser.add_argument("--bundle", nargs="+", choices=bundles, default=[registry.MNMS.name], help="bundles to measure")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help=f"torch device (default {default_device})")
    parser.add_argument("--image_size", type=_positive, default=224)
    parser.add_argument("--batch_size", type=_positive, default=128)
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)")
    parser.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    parser.add_argument("--num_workers", type=int, default=None, help="dataloader workers (default: the bundle's)")
    parser.add_argument("--warmup", type=_positive, default=3, help="untimed iterations before timing")
    parser.add_argument("--iterations", type=_positive, default=20, help="timed iterations")
    parser.add_argument("--cohort", default="demo", help="preset of the generated cohort (tiny, demo, ...)")
    parser.add_argument("--bundles_dir", default=str(registry.bundles_dir()), help="folder holding the bundles")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--override", nargs="*", default=[], metavar="ID=VALUE", help="further bundle settings (augment_on_device=True)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    results = []
    for bundle in args.bundle:
        try:
            results.append(
                benchmark_bundle(
                    bundle,
                    device,
                    args.image_size,
                    args.batch_size,
                    amp=args.amp,
                    channels_last=args.channels_last,
                    num_workers=args.num_workers,
                    warmup=args.warmup,
                    iterations=args.iterations,
                    cohort=args.cohort,
                    bundles_dir=args.bundles_dir,
                    settings=parse_overrides(args.override),
                )
            )
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    report = {"machine": describe_machine(device), "configurations": results}
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
