"""One run per output folder: the lock's record, a live holder refused, a killed holder taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys

import pytest

from mnms_groupdistil.errors import InputError
from mnms_groupdistil.run_lock import LOCK_NAME, OutputDirBusyError, RunLock


def test_the_lock_records_its_holder_and_is_released(tmp_path):
    out = tmp_path / "new" / "run"
    lock = RunLock(out).acquire()
    record = json.loads((out / LOCK_NAME).read_text())
    assert (record["host"], record["pid"], record["command"]) == (socket.gethostname(), os.getpid(), sys.argv)
    assert record["started"].endswith("+00:00")
    (out / "metrics.json").write_text("{}")
    lock.release()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # the run's files stay, the lock goes
    lock.release()  # idempotent


def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path):
    lock = RunLock(tmp_path / "a" / "b").acquire()
    assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_a_held_folder_is_refused_with_the_holder(tmp_path, lock_holder):
    with pytest.raises(OutputDirBusyError) as info:
        RunLock(tmp_path / "run").acquire()
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert f"pid {lock_holder.pid} on host {socket.gethostname()}" in message
    assert "is in use by another run" in message and "--output_dir" in message
    assert (tmp_path / "run" / LOCK_NAME).is_file()  # the lock_holder's lock is untouched


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, lock_holder, caplog):
    lock_holder.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays behind
    lock_holder.wait()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == lock_holder.pid
    with caplog.at_level(logging.WARNING, logger="mnms_groupdistil.run_lock"):
        lock = RunLock(tmp_path / "run").acquire()
    assert f"taking over the lock of pid {lock_holder.pid}" in caplog.text
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_later_run_of_the_same_process_takes_the_lock_over(tmp_path):
    """A run of this process that ended without its finalize (an error in a notebook) does not lock the folder."""
    first = RunLock(tmp_path / "run").acquire()
    second = RunLock(tmp_path / "run").acquire()
    assert second.held and not first.held
    second.release()
    assert not (tmp_path / "run").exists()


def test_a_disabled_lock_does_nothing(tmp_path):
    """Ranks other than 0 under torchrun."""
    lock = RunLock(tmp_path / "run", enabled=False).acquire()
    assert not lock.held and not (tmp_path / "run").exists()
    lock.release()
