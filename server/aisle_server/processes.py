"""Find and end the processes a server started, from ``/proc`` (Linux, like tritonserver itself).

``TritonServer`` uses the process-group helpers to end the Python-backend stubs a killed
tritonserver leaves behind; the test session uses :func:`processes_with_env` to fail when anything
it started is still alive at its end; ``TritonServer`` and ``RedisServer`` start their process
through :func:`ends_with_this_process`, so that a killed owner (``kill -9``, a CI timeout) does not
leave a server running. The encoder models lower their own CPU priority with :func:`lower_priority`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

LOG = logging.getLogger(__name__)


def _state_and_pgrp(pid_dir: Path) -> tuple[str, int] | None:
    try:
        fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp
    except (OSError, IndexError):
        return None  # exited while we looked
    return fields[0], int(fields[2])


def ends_with_this_process(cmd: list[str]) -> list[str]:
    """``cmd`` run under util-linux's ``setpriv --pdeathsig TERM`` (it execs ``cmd``: the same
    process), so it is sent SIGTERM when the thread that started it ends — this process's main
    thread lives as long as the process. From another thread (servers started side by side in a
    thread pool) the command is left as it is: that thread's end would stop the server."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return cmd
    return [setpriv, "--pdeathsig", "TERM", *cmd]


def lower_priority(increment: int) -> int:
    """Raise the niceness of every thread of this process by ``increment`` (0: leave it); the new
    niceness of the calling thread.

    Linux keeps a niceness per thread, and a thread inherits its creator's: each running thread is
    set, so the threads started later (ONNX Runtime's) inherit it too. Raising niceness needs no
    privilege; lowering it does, so ``increment`` must be ≥ 0.
    """
    if increment < 0:
        raise ValueError(f"increment must be >= 0 (lowering niceness needs CAP_SYS_NICE), got {increment}")
    if increment:
        for task in os.listdir("/proc/self/task"):
            try:
                now = os.getpriority(os.PRIO_PROCESS, int(task))
                os.setpriority(os.PRIO_PROCESS, int(task), min(now + increment, 19))
            except ProcessLookupError:
                continue  # the thread ended while we looked
    return os.getpriority(os.PRIO_PROCESS, 0)


def process_group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, from ``/proc``."""
    members = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        found = _state_and_pgrp(pid_dir)
        if found is not None and found[0] != "Z" and found[1] == pgid:
            members.append(int(pid_dir.name))
    return members


def kill_process_group(pgid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL every process left in ``pgid`` (tritonserver's orphaned stubs) and wait until none
    is alive (an orphan is reaped by init: this waits for it to die, it does not reap it)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_group_members(pgid):
        LOG.warning("processes %s of group %d survived SIGKILL", process_group_members(pgid), pgid)


def processes_with_env(name: str, value: str) -> dict[int, str]:
    """Live processes (not zombies) other than this one whose environment has ``name=value``,
    with their command lines; processes of other users, unreadable here, are not listed."""
    needle = f"{name}={value}".encode()
    found = {}
    for pid_dir in Path("/proc").glob("[0-9]*"):
        if int(pid_dir.name) == os.getpid():
            continue
        try:
            if needle not in (pid_dir / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        state = _state_and_pgrp(pid_dir)
        if state is not None and state[0] != "Z":
            found[int(pid_dir.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    return found
