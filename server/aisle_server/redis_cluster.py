"""Start and stop a local Redis Cluster: masters with replicas, each a ``RedisServer`` of its own.

For the integration tests and ``python -m perf.bench_state_cluster``: the same Debian
``redis-server`` as the single-node store (AOF, ``appendfsync always``) with ``--cluster-enabled
yes``, joined by ``redis-cli --cluster create … --cluster-replicas N --cluster-yes``. A short
``cluster-node-timeout`` makes a killed master's replica take over within a few seconds. Every node
inherits ``RedisServer``'s guarantees: a process group of its own, and ``--pdeathsig`` so that no
node outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .redis_server import RedisServer, RedisServerError
from .tritonserver import free_ports

LOG = logging.getLogger(__name__)


def _cli(port: int, *args: str, timeout_s: float = 10.0) -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise RedisServerError("redis-cli not found: install it (Debian: apt-get install redis-tools)")
    out = subprocess.run(  # fixed binary and arguments
        [binary, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        raise RedisServerError(f"redis-cli {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


@dataclass
class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replicas each over ``data_dir``; ``url`` is the state URL."""

    data_dir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = 1000
    startup_timeout_s: float = 60.0
    nodes: list[RedisServer] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[: self.masters])

    def _node(self, i: int) -> RedisServer:
        port, bus = free_ports(2)  # the cluster bus: its own free port, not the default port + 10000
        args = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-port",
            str(bus),
        )
        return RedisServer(self.data_dir / f"node{i}", port=port, extra_args=args)

    def start(self) -> LocalRedisCluster:
        try:
            for i in range(self.masters * (1 + self.replicas)):
                self.nodes.append(self._node(i).start())
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            _cli(
                self.nodes[0].port,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                timeout_s=self.startup_timeout_s,
            )
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        lines = _cli(node.port, "cluster", "info").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def _replicating(self, node: RedisServer) -> bool:
        """A replica whose link to its master is up, or a master with all its replicas attached."""
        try:
            lines = _cli(node.port, "info", "replication").splitlines()
        except RedisServerError:
            return False
        info = dict(line.strip().split(":", 1) for line in lines if ":" in line)
        if info.get("role") == "slave":
            return info.get("master_link_status") == "up"
        return int(info.get("connected_slaves", "0")) >= self.replicas

    def wait_ok(self, timeout_s: float | None = None) -> None:
        """Until every running node says ``cluster_state:ok``, knows every node, and replicates."""
        deadline = time.monotonic() + (timeout_s or self.startup_timeout_s)
        while True:
            running = [node for node in self.nodes if node.is_running()]
            infos = []
            with contextlib.suppress(RedisServerError):  # a node still starting: ask again
                infos = [self.cluster_info(node) for node in running]
            if (
                infos
                and all(
                    i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(self.nodes))
                    for i in infos
                )
                and all(self._replicating(node) for node in running)
            ):
                return
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"Redis Cluster not ok after {timeout_s or self.startup_timeout_s:.0f}s: {infos}"
                )
            time.sleep(0.1)

    def node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str) -> RedisServer | None:
        """The healthy master that holds ``key``'s slot now, as the first running node sees it
        (None during a failover: the failed master still holds it, no replica was promoted yet)."""
        running = next(node for node in self.nodes if node.is_running())
        slot = int(_cli(running.port, "cluster", "keyslot", key).strip())
        for line in _cli(running.port, "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return self.node_at(int(parts[1].split(":")[1].split("@")[0]))
        return None

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # stop the others whatever one did
                LOG.exception("stopping redis-server on port %d failed", node.port)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
