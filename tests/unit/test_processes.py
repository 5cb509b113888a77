"""Process-group and environment lookups that keep tritonserver's stubs from outliving it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid

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
