"""A working directory is removed by the next start once its owner is gone, however it went, and
never while its owner lives (``aisle_server.workdirs``)."""

from __future__ import annotations

import signal
import subprocess
import sys

from aisle_server import workdirs

PREFIX = "aisle-test-"
# a child that makes a working directory, says where, and waits to be killed
OWNER = """
import sys, time
from pathlib import Path
from aisle_server import workdirs
print(workdirs.create(sys.argv[1], Path(sys.argv[2])).path, flush=True)
time.sleep(600)
"""


def test_a_live_owners_directory_stays_and_its_own_remove_deletes_it(tmp_path):
    mine = workdirs.create(PREFIX, tmp_path)
    (mine.path / "backends").mkdir()
    assert mine.path.parent == tmp_path and mine.path.name.startswith(PREFIX)
    assert sorted(p.name for p in mine.path.iterdir()) == [workdirs.LOCK_FILE, "backends"]
    assert workdirs.remove_abandoned(PREFIX, tmp_path) == []  # locked (this process holds it)
    second = workdirs.create(PREFIX, tmp_path)  # a second start beside it leaves it alone
    assert mine.path.is_dir() and second.path.is_dir() and second.path != mine.path
    mine.remove()
    second.remove()
    assert list(tmp_path.iterdir()) == []


def test_the_directory_of_a_killed_owner_is_removed_by_the_next_start(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", OWNER, PREFIX, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        left = tmp_path / owner.stdout.readline().strip().split("/")[-1]
        assert left.is_dir() and left.name.startswith(PREFIX)
        assert workdirs.remove_abandoned(PREFIX, tmp_path) == []  # its owner still lives
        owner.send_signal(signal.SIGKILL)  # no stop(), no finally
        owner.wait(timeout=30)
        assert left.is_dir()  # what SIGKILL leaves
        other = tmp_path / "other-dir"  # another prefix, and one of ours without a lock file
        other.mkdir()
        unlocked = tmp_path / f"{PREFIX}unlocked"
        unlocked.mkdir()
        started = workdirs.create(PREFIX, tmp_path)
        assert not left.exists()
        assert other.is_dir() and unlocked.is_dir() and started.path.is_dir()
        started.remove()
    finally:
        owner.kill()
        owner.wait(timeout=30)
