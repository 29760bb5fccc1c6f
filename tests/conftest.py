"""Fixtures shared by the test modules: one torch thread, a generated cohort, bundle runners, a process holding
a run folder's lock, and a writer of DICOM cine series.

End-to-end runs of whole bundles carry ``@pytest.mark.slow`` (registered here); they still run by
default (``pytest -m "not slow"`` leaves them out while iterating).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigWorkflow

from mnms_groupdistil.data.synthetic import write_mnms_cohort

REPO = Path(__file__).resolve().parents[1]

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end run of a whole bundle or of several processes")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread: with a second busy process on a 2-core machine, two intra-op threads make
    each iteration ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated "tiny" M&Ms cohort in the release layout (``preset="tiny"``, seed 0); do not modify it."""
    return Path(write_mnms_cohort(tmp_path_factory.mktemp("bundle_data") / "MnM", preset="tiny", seed=0))


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


@pytest.fixture(scope="session")
def bundle() -> BundleRunner:
    """Runner for ``bundles/mnms_groupdistil``."""
    return BundleRunner(REPO / "bundles" / "mnms_groupdistil")


@pytest.fixture(scope="session")
def waterbirds_bundle() -> BundleRunner:
    """Runner for ``bundles/waterbirds_groupdistil``."""
    return BundleRunner(REPO / "bundles" / "waterbirds_groupdistil")


_HOLD_LOCK = (
    "import sys; from mnms_groupdistil.run_lock import RunLock; "
    "RunLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture()
def lock_holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of the run folder ``tmp_path / "run"`` until it ends; yields it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "run")]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
