"""One run per output folder: a lock taken when a training run starts, released when it ends.

Two runs into one ``output_dir`` (a job submitted twice, a stopped run resumed twice) would write the
same checkpoints and records at once. The bundles' train configs take a :class:`RunLock` on
``<output_dir>/run.lock`` before they write anything there, and release it in ``finalize``. The lock
is an exclusive ``flock`` on that file, which the operating system drops when its process ends, however
it ends (``kill -9`` included); the file holds who took it (host, pid, start time, command) for the
message a second run gets. A second run into a folder whose lock is held stops with
:class:`OutputDirBusyError` naming the holder; a lock file left by a process that is gone is taken over
with a warning. Under ``torchrun`` rank 0 holds it (``enabled`` is False on the other ranks).

Example (bundle config)::

    "run_lock": {"_target_": "mnms_groupdistil.run_lock.RunLock", "output_dir": "@output_dir",
                 "enabled": "@main_process"},
    "initialize": [..., "$@run_lock.acquire()", ...],
    "finalize": [..., "$@run_lock.release()"]
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mnms_groupdistil.errors import InputError

__all__ = ["LOCK_NAME", "OutputDirBusyError", "RunLock"]

logger = logging.getLogger(__name__)

#: File name of the lock in a run's ``output_dir``.
LOCK_NAME = "run.lock"

_HELD: dict[str, RunLock] = {}  # lock path -> the lock this process holds on it


class OutputDirBusyError(InputError):
    """Another run that is still going holds the lock of the output folder."""


def _describe(holder: dict[str, Any]) -> str:
    command = holder.get("command")
    command = shlex.join(command) if isinstance(command, list) else str(command)
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')} (command: {command})"


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = b""
    while chunk := os.read(fd, 65536):
        text += chunk
    try:
        holder = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class RunLock:
    """The lock of one run's output folder (see the module docstring).

    Args:
        output_dir: the run's folder; created by :meth:`acquire` if missing.
        enabled: False where this process does not hold the lock (``torchrun`` ranks other than 0):
            :meth:`acquire` and :meth:`release` then do nothing.
    """

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.enabled = bool(enabled)
        self._fd: int | None = None
        self._created: list[Path] = []  # the folders acquire created, deepest first

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def _key(self) -> str:
        return os.path.realpath(self.path)

    def acquire(self) -> RunLock:
        """Take the lock (idempotent), creating ``output_dir`` if needed; returns ``self``.

        A lock this process took earlier for the same folder (a run of this process that ended without
        its ``finalize``) is handed over.

        Raises:
            OutputDirBusyError: another live process holds the lock (the message names it).
        """
        if not self.enabled or self.held:
            return self
        earlier = _HELD.get(self._key())
        if earlier is not None:
            logger.debug("%s: taking over the lock of an earlier run of this process", self.path)
            earlier.release()
        created = [p for p in (self.output_dir, *self.output_dir.parents) if not p.exists()]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise OutputDirBusyError(
                    f"output_dir {self.output_dir} is in use by another run: {_describe(holder)}. Wait for that "
                    f"run to end, or pass another --output_dir (the lock {self.path} is released when its "
                    "process ends)."
                ) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)  # the holder released (removed) the file between our open and flock: lock the new one
        previous = _read(fd)
        if previous:
            logger.warning(
                f"{self.path}: taking over the lock of {_describe(previous)}, which ended without releasing it"
            )
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": [str(a) for a in sys.argv],
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd, self._created = fd, created
        _HELD[self._key()] = self
        atexit.register(self.release)
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent; also run at exit).

        The folders that :meth:`acquire` created and that are still empty (a run that stopped before
        writing anything) are removed too.
        """
        if self._fd is None:
            return
        atexit.unregister(self.release)
        _HELD.pop(self._key(), None)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # the run wrote there
                break
