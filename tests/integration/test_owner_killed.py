"""A server whose owner is killed (``kill -9``: no ``stop()``, no ``finally``) does not outlive it:
tritonserver and redis-server are started under ``setpriv --pdeathsig TERM``; and the next start
removes the working directory the killed owner's tritonserver left (``aisle_server.workdirs``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aisle_server import tritonserver, workdirs
from aisle_server.processes import kill_process_group, process_group_members

OWNER = """
import json, sys, time
from pathlib import Path
from aisle_server.redis_server import RedisServer
from aisle_server.tritonserver import TritonServer
triton = TritonServer(Path(sys.argv[1]), log_file=Path(sys.argv[2]) / "tritonserver.log").start()
redis = RedisServer(Path(sys.argv[2]) / "redis").start()
print(json.dumps({"triton": triton.pid, "redis": redis.pid, "workdir": str(triton._workdir.path)}), flush=True)
time.sleep(600)
"""


def test_servers_stop_when_their_owner_is_killed(repo, tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(repo), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    started: dict[str, int] = {}
    try:
        started = json.loads(owner.stdout.readline())
        workdir = Path(started.pop("workdir"))
        assert workdir.is_dir() and workdir not in workdirs.remove_abandoned(tritonserver.WORKDIR_PREFIX)
        for pid in started.values():  # each a live group leader
            assert pid in process_group_members(pid)
        assert len(process_group_members(started["triton"])) > 1  # tritonserver and its stubs
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            process_group_members(started["triton"]) or process_group_members(started["redis"])
        ):
            time.sleep(0.2)
        assert process_group_members(started["triton"]) == []  # tritonserver and every stub
        assert process_group_members(started["redis"]) == []
        assert workdir.is_dir()  # nobody removed it: the next TritonServer start does, as here
        assert workdir in workdirs.remove_abandoned(tritonserver.WORKDIR_PREFIX)
        assert not workdir.exists()
    finally:
        owner.kill()
        owner.wait(timeout=30)
        for pid in started.values():  # what a failing run left behind
            kill_process_group(pid)
