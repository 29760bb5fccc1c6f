"""What the test modules share besides fixtures (those are in ``conftest.py``): the bundles' folders and
runners, the tiny run settings, config checks, command-line checks, and a cohort written by hand.

The test modules import it as ``helpers`` (``pythonpath = ["tests"]`` in ``pyproject.toml``); no test
module imports another.
"""

from __future__ import annotations

import csv
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.config_item import ComponentLocator
from monai.bundle.reference_resolver import ReferenceResolver
from monai.utils.module import locate

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------- settings

#: Every in-test run on the CPU, without loader worker processes.
CPU: dict[str, Any] = {"num_workers": 0, "device": "cpu"}

#: The smallest run of either bundle: one epoch of 4-image batches of 32 px images, on the CPU.
TINY: dict[str, Any] = {"max_epochs": 1, "batch_size": 4, "image_size": 32, **CPU}

#: :data:`TINY` for the M&Ms bundle on the generated "tiny" cohort: its demo split, two frames per patient.
TINY_MNMS: dict[str, Any] = {**TINY, "split": "demo", "frames_per_patient": 2}

#: The 211230 M&Ms information CSV's header, written out here rather than imported, so that the tests
#: that write CSVs by hand do not trust the generator.
MNMS_RELEASE_HEADER = [
    "",
    "External code",
    "Pathology",
    "VendorName",
    "Vendor",
    "Centre",
    "ED",
    "ES",
    "Age",
    "Sex",
    "Height",
    "Weight",
]


# -------------------------------------------------------------------------------------- bundles


class BundleRunner:
    """Runs a bundle's configs in this process (``ConfigWorkflow``) or as a user does (a subprocess).

    Args:
        bundle: the bundle folder (holding ``configs/``).
    """

    def __init__(self, bundle: Path) -> None:
        self.configs = bundle / "configs"
        self.metadata = self.configs / "metadata.json"

    def paths(self, config_files: Sequence[str | Path]) -> list[str]:
        """Config names (``"train.json"``) or paths -> paths."""
        return [str(c if Path(c).is_absolute() else self.configs / c) for c in config_files]

    def make(
        self,
        config_files: Sequence[str | Path],
        workflow_type: str | None = "train",
        run_id: str = "run",
        **overrides: Any,
    ) -> ConfigWorkflow:
        return ConfigWorkflow(
            config_file=self.paths(config_files),
            meta_file=str(self.metadata),
            logging_file=False,  # the bundle's logging.conf reconfigures the root logger; not wanted in pytest
            workflow_type=workflow_type,
            run_id=run_id,
            **overrides,
        )

    def run(
        self,
        config_files: Sequence[str | Path],
        workflow_type: str | None = "train",
        run_id: str = "run",
        **overrides: Any,
    ) -> ConfigWorkflow:
        workflow = self.make(config_files, workflow_type=workflow_type, run_id=run_id, **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        return workflow

    def cli(
        self, run_id: str, config_files: Sequence[str | Path], timeout: float = 240, **overrides: Any
    ) -> subprocess.CompletedProcess:
        """``python -m monai.bundle run <run_id> --config_file [...] --<key> <value> ...`` with the
        bundle's logging.conf, one torch thread, from the repository root; returns the finished process."""
        command = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            run_id,
            "--config_file",
            repr(self.paths(config_files)),
            "--meta_file",
            str(self.metadata),
            "--logging_file",
            str(self.configs / "logging.conf"),
        ]
        for key, value in overrides.items():
            command += [f"--{key}", str(value)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        return subprocess.run(
            command,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
        )


MNMS_BUNDLE = BundleRunner(REPO / "bundles" / "mnms_groupdistil")
WATERBIRDS_BUNDLE = BundleRunner(REPO / "bundles" / "waterbirds_groupdistil")

#: The M&Ms bundle's configs folder.
CONFIGS = MNMS_BUNDLE.configs


# --------------------------------------------------------------------------------- command line


def last_lines(text: str, n: int) -> list[str]:
    """The last ``n`` non-blank lines of ``text`` (what a user reads last of a command's output)."""
    return [line for line in text.splitlines() if line.strip()][-n:]


#: The line before the message of an error the user fixes (``mnms_groupdistil.errors.report_errors``).
REPORTED = "The run cannot go on:"


def refused(proc: subprocess.CompletedProcess, lines: int) -> list[str]:
    """The last ``lines`` lines of a command that ended on a reported error, checked: exit status 1, no
    traceback, and :data:`REPORTED` just before them."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "Failed to evaluate" not in output, output[-3000:]
    last = last_lines(proc.stderr, lines + 1)
    assert last[0] == REPORTED, last
    return last[1:]


def run_command(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command`` run to its end in ``cwd`` with ``env``, its output captured as text."""
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, errors="replace", timeout=300)


def without_package(tmp_path: Path) -> dict[str, str]:
    """Environment where ``import mnms_groupdistil`` (and torchvision) fail: a path entry that shadows them."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    for name in ("mnms_groupdistil", "torchvision"):
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return {**os.environ, "PYTHONPATH": str(blocker), "OMP_NUM_THREADS": "1"}


def run_exported_inference(
    bundle: Path, dataset_dir: Path, out: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """The exported bundle's inference.json on ``dataset_dir``, run from ``bundle`` with ``env``, where (checked
    first) ``import mnms_groupdistil`` fails; returns the finished process, which succeeded."""
    proc = run_command([sys.executable, "-c", "import mnms_groupdistil"], bundle, env)
    assert proc.returncode != 0 and "mnms_groupdistil is not installed here" in proc.stderr
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    command += ["--dataset_dir", str(dataset_dir), "--output_dir", str(out), "--num_workers", "0", "--device", "cpu"]
    proc = run_command(command, bundle, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# ------------------------------------------------------------------------------- runs and errors


def exception_chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it was raised from (``__cause__``) or during (``__context__``)."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars of all event files in ``run_dir`` (trainer and evaluator write separate files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files in {run_dir}"
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return scalars


# ---------------------------------------------------------------------------------- config checks

EXPR_NAME = re.compile(r"(?<![\w.@#])((?:mnms_groupdistil|monai|torch|os|glob|ignite)(?:\.[A-Za-z_]\w*)+)")


def walk(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(id, value)`` of a parsed config, the config itself first (id ``""``)."""
    yield path, config
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        yield from walk(value, f"{path}#{key}" if path else str(key))


def _locate_target(name: str) -> Any:
    """Resolve a ``_target_`` the way ``ConfigComponent`` does (short MONAI names via ComponentLocator)."""
    module = ComponentLocator().get_component_module_name(name)
    if isinstance(module, list):
        module = module[0]
    return locate(f"{module}.{name}" if module else name)


def _locate_expression_name(dotted: str) -> None:
    """Resolve ``a.b.c`` used in an expression: import the longest module prefix, then getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    raise ImportError(dotted)


def config_problems(config: dict) -> list[str]:
    """Every dangling ``@`` reference / ``%`` macro, unimportable ``_target_``, ``$import`` or dotted name."""
    parser = ConfigParser(config)
    problems = []
    for path, value in walk(parser.get()):
        if isinstance(value, dict) and "_target_" in value:
            target = value["_target_"]
            try:
                obj = _locate_target(target)
                if not callable(obj):
                    problems.append(f"{path}: _target_ {target!r} is not callable")
            except Exception as err:  # noqa: BLE001
                problems.append(f"{path}: _target_ {target!r} cannot be located ({type(err).__name__}: {err})")
        if not isinstance(value, str):
            continue
        if value.startswith("%"):
            file, macro_id = ConfigParser.split_path_id(value[1:])
            source = ConfigParser(ConfigParser.load_config_file(file)) if file else parser
            if macro_id not in source:
                problems.append(f"{path}: macro {value!r} names no id")
        if value.startswith(("@", "$")):
            for ref in ReferenceResolver.match_refs_pattern(ConfigParser.resolve_relative_ids(path, value)):
                if ref not in parser:
                    problems.append(f"{path}: reference @{ref} names no id")
        if value.startswith("$import "):
            for module in value[len("$import ") :].split(","):
                try:
                    importlib.import_module(module.split(" as ")[0].strip())
                except ImportError as err:
                    problems.append(f"{path}: {value!r} fails ({err})")
        elif value.startswith("$"):
            for dotted in EXPR_NAME.findall(value):
                try:
                    _locate_expression_name(dotted)
                except Exception as err:  # noqa: BLE001
                    problems.append(f"{path}: {dotted} in {value!r} cannot be resolved ({type(err).__name__})")
    return problems


def merged_config(files: list[str]) -> dict:
    """The configs merged, ``metadata.json`` beside the first under ``_meta_``: what ``monai.bundle run`` reads."""
    parser = ConfigParser()
    parser.read_config(files)
    metadata = Path(files[0]).parent / "metadata.json"
    if metadata.is_file():
        parser.read_meta(str(metadata))
    return parser.get()


# ------------------------------------------------------------------------ a cohort written by hand

#: The release folders the hand-written cohort spreads its subjects over.
RELEASE_FOLDERS = ["Training/Labeled", "Training/Unlabeled", "Validation", "Testing"]


def _write_subject(root: Path, folder: str, code: str, hcm: bool, rng: np.random.Generator, dtype, shape) -> None:
    x, y, z, t = shape
    xx, yy = np.meshgrid(np.arange(x) - x / 2, np.arange(y) - y / 2, indexing="ij")
    r = np.hypot(xx, yy)
    data = np.zeros(shape)
    for k in range(t):
        cavity = 0.18 * min(x, y) * (1 - 0.3 * np.sin(np.pi * k / t))
        wall = cavity * (0.9 if hcm else 0.35)
        frame = np.where(r < cavity, 300.0, np.where(r < cavity + wall, 60.0, 140.0))
        data[..., k] = frame[..., None] + rng.normal(0, 10, (x, y, z))
    angle = rng.uniform(0, np.pi)
    affine = np.diag([1.37, 1.37, 9.0, 1.0])
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine[:3, :3] = rot @ affine[:3, :3]
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.set_sform(None, code=0)
    img.set_qform(affine, code=1)
    folder_path = root / folder / code
    folder_path.mkdir(parents=True)
    nib.save(img, folder_path / f"{code}_sa.nii.gz")


def write_foreign_cohort(root: Path) -> None:
    """An M&Ms-layout cohort in ``root`` written the way other tools write one, not by the project's generator.

    Plain nibabel with a qform-only header, float64, uint16 and int16 data, odd in-plane sizes, anisotropic and
    oblique voxels, a CSV with Windows line endings, subjects spread over all four release folders: 3 HCM and 3
    NOR patients of each of the vendors A, C and D, and one of each of vendor B.
    """
    rng = np.random.default_rng(42)
    rows = []
    vendors = {
        "A": ("SIEMENS", 1),
        "B": ("Philips Medical Systems", 2),
        "C": ("GE MEDICAL SYSTEMS", 4),
        "D": ("Canon", 5),
    }
    n = 0
    for vendor in "ACDB":
        for pathology in ("HCM", "NOR"):
            for _ in range(3 if vendor != "B" else 1):
                code = f"Q{n:02d}{vendor}{pathology[0]}9"
                shape = (int(rng.integers(37, 51)), int(rng.integers(33, 47)), int(rng.integers(2, 4)), 7)
                dtype = [np.float64, np.uint16, np.int16][n % 3]
                es, ed = (5, 0) if n % 2 else (0, 4)
                _write_subject(root, RELEASE_FOLDERS[n % 4], code, pathology == "HCM", rng, dtype, shape)
                name, centre = vendors[vendor]
                rows.append(
                    [
                        n,
                        code,
                        pathology,
                        name,
                        vendor,
                        centre,
                        ed,
                        es,
                        50 + n,
                        "M" if n % 2 else "F",
                        "" if n % 5 == 0 else 170.0,
                        "" if n % 5 == 0 else 70.5,
                    ]
                )
                n += 1
    with open(root / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(MNMS_RELEASE_HEADER)
        writer.writerows(rows)


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    manufacturer: str,
    series_uid: str = "1.2.826.0.1.99.1",
    study_uid: str = "1.2.826.0.1.99",
    patient_id: str = "GD0001",
) -> None:
    """One file per (slice, phase) of ``volume`` (X, Y, Z, T), file names in a shuffled order.

    The slices lie along the normal of an oblique orientation, 8 mm apart, and the phases are 30 ms apart;
    image column x is ``volume`` axis 0 and row y axis 1 (``GetImageFromArray`` takes (y, x)). Instance ``n``
    (1-based, slice-major) has the SOP Instance UID ``<series_uid>.<n>``.
    """
    folder.mkdir(parents=True)
    row_dir = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    col_dir = np.array([-np.sin(0.4) * np.cos(0.3), np.cos(0.4) * np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row_dir, col_dir)
    x, y, z, t = volume.shape
    order = np.random.default_rng(5).permutation(z * t)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for n, (k, f) in enumerate((k, f) for k in range(z) for f in range(t)):
        image = sitk.GetImageFromArray(volume[:, :, k, f].T[None].copy())  # (1, y, x) -> size (x, y, 1)
        position = np.array([-20.0, 10.0, 5.0]) + 8.0 * k * normal
        image.SetSpacing((1.4, 1.4, 8.0))
        image.SetOrigin(position.tolist())
        image.SetDirection(np.stack([row_dir, col_dir, normal], axis=1).ravel().tolist())
        for tag, value in {
            "0008|0060": "MR",
            "0008|0070": manufacturer,
            "0010|0010": f"Generated^{patient_id}",
            "0010|0020": patient_id,
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{n + 1}",
            "0020|0013": str(n + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*row_dir, *col_dir)),
            "0018|1060": f"{30.0 * f:.1f}",
        }.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{order[n]:04d}.dcm"))
        writer.Execute(image)


def sr_items(dataset: Any) -> dict[str, list[Any]]:
    """Every content item of a DICOM SR read with pydicom (not highdicom), as concept meaning -> values in document
    order: the code meaning of CODE items, numbers of NUM items, text of TEXT items, UIDs of UIDREF items."""
    found: dict[str, list[Any]] = {}

    def walk(items: Any) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            kind = item.ValueType
            if kind == "CODE":
                found.setdefault(name, []).append(item.ConceptCodeSequence[0].CodeValue)
            elif kind == "NUM":
                found.setdefault(name, []).append(float(item.MeasuredValueSequence[0].NumericValue))
            elif kind == "TEXT":
                found.setdefault(name, []).append(str(item.TextValue))
            elif kind == "UIDREF":
                found.setdefault(name, []).append(str(item.UID))
            elif kind == "IMAGE":
                found.setdefault("IMAGE", []).append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(dataset.ContentSequence)
    return found
