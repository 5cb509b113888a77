"""Session-wide: no process the tests started may outlive the session; integration tests run in order.

Every process the session starts (tritonservers, their Python-backend stubs, redis-servers, CLI
subprocesses) inherits ``AISLE_TEST_SESSION``. At the end, any of them still alive is listed, killed
so the machine stays clean, and fails the session.

``make test`` runs two pytest-xdist workers (``-n 2``): the integration tests are one scope, run in
order by one worker over one set of session fixtures (one exported repository, one served
tritonserver), while the other worker takes the unit tests, the integration modules that share
none of those fixtures (``SELF_CONTAINED``) and, as one scope, those that start servers of their own
from a copy of the session's repository (``OWN_SERVERS``: that worker builds the repository once
more, which costs less than running them on the critical path). (Not ``--dist loadgroup``: xdist 3.8
marks a group in ``item._nodeid``, which pytest 9.2 no longer reads.) Workers inherit the controller's
marker, so only the controller checks for leftovers, after every worker has exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Generator

import pytest

from aisle_server.processes import processes_with_env
from aisle_server.tritonserver import TritonServer

MARKER = "AISLE_TEST_SESSION"
INTEGRATION = "integration"
#: Integration modules and tests that use none of the shared session fixtures (repository, served
#: tritonserver): a scope of their own, so the worker that runs the unit tests takes them beside the
#: in-order ones (the integration worker is the suite's critical path).
SELF_CONTAINED = frozenset(
    {
        f"tests/{INTEGRATION}/test_learned_feed.py",
        f"tests/{INTEGRATION}/test_install.py::test_the_toolchain_runs_from_an_installed_wheel_outside_the_checkout",
    }
)

#: Integration modules that use the session's exported and indexed repository but none of its served
#: tritonserver: each starts servers of its own, and none measures time under load. One scope, so the
#: worker that takes it builds the repository once.
OWN_SERVERS = frozenset(
    f"tests/{INTEGRATION}/{name}.py"
    for name in (
        "test_stub_python",
        "test_int8_serving",
        "test_static_student_serving",
        "test_sdk_restart",
        "test_rules",
    )
)
OWN_SERVERS_SCOPE = f"{INTEGRATION}-own-servers"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault(MARKER, uuid.uuid4().hex)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: called only with -n
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling, every integration test in one scope: one worker runs them in order."""
    from xdist.scheduler import LoadScopeScheduling

    class IntegrationInOrder(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:  # the scope a test is scheduled with
            module = nodeid.split("::")[0]
            if module in SELF_CONTAINED:
                return module
            if nodeid in SELF_CONTAINED:
                return nodeid
            if module in OWN_SERVERS:
                return OWN_SERVERS_SCOPE
            return INTEGRATION if nodeid.startswith(f"tests/{INTEGRATION}/") else nodeid

    return IntegrationInOrder(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test whose tritonserver is gone says how it ended (exit code or signal, its last log
    lines): a server that dies between tests otherwise shows only as refused connections."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            ended = value.exit_report() if isinstance(value, TritonServer) else None
            if ended is not None:
                report.sections.append((f"fixture {name!r}: its server is gone", ended))
    return report


@pytest.hookimpl(trylast=True)  # after xdist's own sessionfinish has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: its processes carry the controller's marker, which checks them
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
