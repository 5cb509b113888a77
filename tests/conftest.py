"""Session-wide: no process the tests started may outlive the session.

Every process the session starts (tritonservers, their Python-backend stubs, redis-servers, CLI
subprocesses) inherits ``AISLE_TEST_SESSION``. At the end, any of them still alive is listed, killed
so the machine stays clean, and fails the session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import pytest

from aisle_server.processes import processes_with_env

MARKER = "AISLE_TEST_SESSION"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(MARKER, uuid.uuid4().hex)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = processes_with_env(MARKER, os.environ[MARKER])
    if not leftovers:
        return
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    lines = [f"{len(leftovers)} process(es) started by the tests outlived them (now killed):"]
    lines += [f"  pid {pid}: {cmd}" for pid, cmd in sorted(leftovers.items())]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "processes left running", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
