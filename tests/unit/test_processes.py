"""Process-group and environment lookups that keep tritonserver's stubs from outliving it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid

import pytest

from aisle_server.processes import kill_process_group, process_group_members, processes_with_env

# A leader that starts a grandchild ignoring SIGTERM (like a stub), then dies: the orphan stays in the group.
ORPHANING = (
    "import subprocess, sys\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "time.sleep(120)'])\n"
)


def test_an_orphan_left_in_the_group_is_found_and_killed() -> None:
    token = uuid.uuid4().hex
    leader = subprocess.Popen(
        [sys.executable, "-c", ORPHANING], start_new_session=True, env={**os.environ, "AISLE_PROCESS_TEST": token}
    )
    leader.wait(timeout=30)
    orphans = process_group_members(leader.pid)
    try:
        assert len(orphans) == 1 and leader.pid not in orphans  # the leader is gone, its child is not
        assert set(processes_with_env("AISLE_PROCESS_TEST", token)) == set(orphans)
        kill_process_group(leader.pid)
        assert process_group_members(leader.pid) == []
        assert processes_with_env("AISLE_PROCESS_TEST", token) == {}
    finally:
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_an_empty_group_is_a_no_op() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    done.wait(timeout=30)
    kill_process_group(done.pid)
    assert process_group_members(done.pid) == []
    assert processes_with_env("AISLE_PROCESS_TEST", uuid.uuid4().hex) == {}


LOWERED = (
    "import os, threading\n"
    "from aisle_server.processes import lower_priority\n"
    "started = threading.Event(); done = threading.Event()\n"
    "def before(): started.set(); done.wait(30); print('before', os.getpriority(os.PRIO_PROCESS, 0))\n"
    "thread = threading.Thread(target=before); thread.start(); started.wait(30)\n"
    "print('caller', lower_priority({increment}))\n"
    "after = threading.Thread(target=lambda: print('after', os.getpriority(os.PRIO_PROCESS, 0)))\n"
    "after.start(); after.join(); done.set(); thread.join()\n"
)


def _niceness_in_child(increment: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", LOWERED.format(increment=increment)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return {name: int(value) for name, value in (line.split() for line in out.stdout.splitlines())}


def test_lower_priority_reaches_running_and_later_threads() -> None:
    start = os.getpriority(os.PRIO_PROCESS, 0)  # the child inherits this process's niceness
    expected = min(start + 5, 19)
    assert _niceness_in_child(5) == {"caller": expected, "before": expected, "after": expected}
    assert _niceness_in_child(0) == {"caller": start, "before": start, "after": start}


def test_lower_priority_refuses_to_raise_priority() -> None:
    from aisle_server.processes import lower_priority

    with pytest.raises(ValueError, match="increment"):
        lower_priority(-1)
