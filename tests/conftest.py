"""Fixtures shared by the test modules: one torch thread, a generated cohort, an untrained teacher, the bundle
runners, a process holding a run folder's lock. Plain helpers are in ``helpers.py``.

Every test that trains a bundle (in this process or another) or runs several processes carries
``@pytest.mark.slow`` (registered here); they still run by default (``pytest -m "not slow"`` leaves them
out while iterating).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import MNMS_BUNDLE, REPO, WATERBIRDS_BUNDLE, BundleRunner

from mnms_groupdistil.datasets.mnms.synthetic import write_mnms_cohort
from mnms_groupdistil.networks import build_network

#: MLflow 3 reports usage from a background thread, which on a machine without a network holds up the end of every
#: process that tracked (pytest's and the bundle runs' it starts) for minutes; the tests report nothing.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: trains a bundle, or runs several processes")


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


@pytest.fixture(scope="session")
def untrained_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weights of an untrained M&Ms teacher (ResNet-18, one input channel, seed 0): a ``teacher_ckpt`` for
    runs that need one to start but not a trained one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("untrained_teacher") / "teacher.pt"
    torch.save(build_network("resnet18", num_classes=2, in_channels=1).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def bundle() -> BundleRunner:
    """Runner for ``bundles/mnms_groupdistil``."""
    return MNMS_BUNDLE


@pytest.fixture(scope="session")
def waterbirds_bundle() -> BundleRunner:
    """Runner for ``bundles/waterbirds_groupdistil``."""
    return WATERBIRDS_BUNDLE


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
