"""A process's private working directory, and its removal by the next start when that process was killed.

Why: each ``TritonServer`` start writes a backend directory and a ``python3`` shim into a temporary
directory, and ``stop()`` removes it. An owner killed outright (SIGKILL: a CI job's timeout, the
OOM killer, the tests that kill ``aisle serve``) runs no ``stop()``, and its directory stayed in
``/tmp``: 34 of them after a day of test runs here, two or three per ``make test``.

Each directory holds :data:`LOCK_FILE`, which its owner keeps locked (``flock``) while it lives;
the kernel releases that lock when the owner dies, however it dies. :func:`create` first removes
every directory of its kind whose lock it can take. A lock and not a pid: pids are reused, and
a ``/tmp`` shared between containers shows pids from another namespace. The lock file is locked
under a temporary name and then renamed into place, so a directory whose lock file can be seen
always has a live lock or a dead owner. Directories without a lock file (made before this module
existed, or being made at this moment) are left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)
LOCK_FILE = ".owner.lock"


@dataclass
class Workdir:
    """A directory and the open, locked descriptor of its lock file (held until :meth:`remove`)."""

    path: Path
    lock_fd: int

    def remove(self) -> None:
        """Delete the directory, then let go of its lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.lock_fd)


def create(prefix: str, root: Path | None = None) -> Workdir:
    """A new directory ``<root>/<prefix>XXXXXXXX`` locked by this process, after removing the ones of
    the same ``prefix`` whose owners are gone (``root``: the system's temporary directory)."""
    remove_abandoned(prefix, root)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    pending = path / f"{LOCK_FILE}.{os.getpid()}"
    fd = os.open(pending, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the lock goes with the file through the rename
    os.rename(pending, path / LOCK_FILE)
    return Workdir(path, fd)


def remove_abandoned(prefix: str, root: Path | None = None) -> list[Path]:
    """Delete each ``<root>/<prefix>*`` directory whose lock no live process holds; the ones deleted."""
    removed = []
    for directory in sorted(Path(root or tempfile.gettempdir()).glob(f"{prefix}*")):
        try:
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # no lock file (older, or being made), not a directory, not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner lives
            os.close(fd)
            continue
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)
        removed.append(directory)
    if removed:
        LOG.info("removed %d working directories whose owners were killed: %s", len(removed), removed)
    return removed
