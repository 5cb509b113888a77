"""Start and stop the local ``redis-server`` that holds shopper state (``aisle serve``'s default).

Durability: ``appendonly yes`` with ``appendfsync always``. Redis appends every write to its AOF
and, with ``always``, fsyncs it before it answers the clients of that event-loop turn, so an event
``track`` acknowledged is on disk: it survives a Redis crash, a kill -9 or a power cut. The
default ``everysec`` would lose up to a second of acknowledged events; RDB snapshots (off here:
``save ""``) lose everything since the last one. The cost is an fsync per write batch, shared by
every event of one ``track`` request and of every client that wrote in the same turn (group
commit); the event rates of a shop are far below what one fsync per turn allows.

The process must not outlive its owner: it runs in a process group of its own (stopped with
SIGTERM, which makes Redis flush and exit, then SIGKILL to the group), and under ``setpriv
--pdeathsig TERM`` so that it also stops when the process that started it dies without cleaning up.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .processes import ends_with_this_process, kill_process_group
from .tritonserver import free_port

LOG = logging.getLogger(__name__)

#: What makes an acknowledged event durable (see the module docstring).
DURABILITY_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")


class RedisServerError(RuntimeError):
    """redis-server is missing, could not start, or exited while we waited for it."""


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A local redis-server over ``data_dir``; ``with RedisServer(dir) as redis: redis.url``."""

    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    binary: str = "redis-server"
    startup_timeout_s: float = 30.0
    stop_timeout_s: float = 15.0
    #: more ``redis-server`` arguments (a cluster node's ``--cluster-enabled yes`` …, ``redis_cluster``)
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        binary = shutil.which(self.binary)
        if binary is None:
            raise RedisServerError(
                f"{self.binary} not found: install it (Debian: apt-get install redis-server; `make system-deps`) "
                "or point `aisle serve --state redis://HOST:PORT` at a running Redis"
            )
        cmd = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
            *DURABILITY_ARGS,
            *self.extra_args,
        ]
        return ends_with_this_process(cmd)  # stop with the parent even if it is killed

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        LOG.info("starting redis-server on %s:%d over %s", self.host, self.port, self.data_dir)
        self._process = subprocess.Popen(  # fixed binary, arguments built above
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while not _ping(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self.stop()
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RedisServerError(f"redis-server did not start (exit code {code}):\n{tail}")
            time.sleep(0.05)
        return self

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests): no flush beyond what each fsync already did."""
        if self._process is not None:
            kill_process_group(self._process.pid)
            self._process.wait()
            self._process = None

    def stop(self) -> int | None:
        """SIGTERM (Redis writes its AOF and exits), wait, then SIGKILL whatever is left."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                LOG.warning("redis-server did not stop in %.0fs; killing it", self.stop_timeout_s)
        code = self._process.poll()
        kill_process_group(self._process.pid)
        self._process.wait()
        self._process = None
        return code

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
