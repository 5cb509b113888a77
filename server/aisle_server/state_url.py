"""The state store's URL (``AISLE_STATE_URL``, ``aisle serve --state``): one Redis, or a Redis Cluster.

=============================================================  ====================================
``redis://[:PASSWORD@]HOST:PORT[/DB][?…]``                      one Redis (``rediss://``: TLS); the
                                                               default, and the layout it always had
``redis-cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…][?…]``      a Redis Cluster: any of its nodes to
                                                               start from (``rediss-cluster://``: TLS)
=============================================================  ====================================

Query parameters Aisle reads (the rest go to redis-py, as ``redis.Redis.from_url`` reads them):

- ``shards``: how many streams the event log and the catalog change log are split into, each in a
  hash slot of its own (``aisle_server.state_keys``). Default 1 for ``redis://`` (the keys it
  always had), 16 for a cluster. Every process of one store must use the same value for the life
  of the store (it is part of every key).
- ``replicas``: how many replicas must hold a ``track`` or ``update_items`` write before it is
  acknowledged (``WAIT``); default 0 for ``redis://`` (no replica to wait for: the AOF fsync is the
  guarantee), 1 for a cluster. Not enough replicas in time is a retryable error, never an ack.
- ``replica_timeout_ms``: how long to wait for them (default 200).

The password (``redis://:PASSWORD@…``) is never printed: :attr:`StateUrl.shown` masks it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis-cluster", "rediss-cluster")
#: The query parameters Aisle reads; redis-py never sees them.
AISLE_PARAMS = ("shards", "replicas", "replica_timeout_ms")
DEFAULT_CLUSTER_SHARDS = 16
MAX_SHARDS = 1024


@dataclass(frozen=True)
class StateUrl:
    """A parsed state URL. ``redis_url``: what redis-py gets for one node (Aisle's parameters removed)."""

    url: str
    cluster: bool
    nodes: tuple[tuple[str, int], ...]
    redis_url: str
    username: str | None
    password: str | None
    tls: bool
    shards: int
    replicas: int
    replica_timeout_ms: int

    @property
    def shown(self) -> str:
        """The URL as logs and errors show it: the password masked."""
        return masked(self.url)

    @property
    def replica_timeout_s(self) -> float:
        return self.replica_timeout_ms / 1000.0


def masked(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return re.sub(r"^([A-Za-z+.-]+://[^:/@]*:)[^@]*@", r"\1***@", url.strip())


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int, url: str) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not (low <= value <= high):
        raise ValueError(f"state URL {masked(url)!r}: {name}={raw!r} must be an integer in [{low}, {high}]")
    return value


def parse_state_url(url: str) -> StateUrl:
    """Parse ``url``; ValueError naming what is wrong (scheme, host list, a query parameter)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(
            f"state URL {masked(url)!r}: scheme must be one of {', '.join(s + '://' for s in SINGLE_SCHEMES + CLUSTER_SCHEMES)}"
        )
    cluster = scheme in CLUSTER_SCHEMES
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    shards = _int_param(params, "shards", DEFAULT_CLUSTER_SHARDS if cluster else 1, 1, MAX_SHARDS, url)
    replicas = _int_param(params, "replicas", 1 if cluster else 0, 0, 16, url)
    timeout_ms = _int_param(params, "replica_timeout_ms", 200, 1, 60_000, url)
    rest = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in AISLE_PARAMS])
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    nodes: list[tuple[str, int]] = []
    if scheme != "unix":
        for host in hosts.split(","):
            name, _, port = host.strip().rpartition(":") if ":" in host else (host.strip(), "", "6379")
            if not name or not port.isdigit() or not (0 < int(port) < 65536):
                raise ValueError(f"state URL {masked(url)!r}: {host!r} is not HOST:PORT")
            nodes.append((name.strip("[]"), int(port)))
        if not cluster and len(nodes) != 1:
            raise ValueError(
                f"state URL {masked(url)!r}: redis:// names one node; a cluster is redis-cluster://H:P,H:P…"
            )
    redis_url = parts._replace(query=rest).geturl() if not cluster else ""
    return StateUrl(
        url=url,
        cluster=cluster,
        nodes=tuple(nodes),
        redis_url=redis_url,
        username=unquote(username) or None,
        password=unquote(password) if password else None,
        tls=scheme.startswith("rediss"),
        shards=shards,
        replicas=replicas,
        replica_timeout_ms=timeout_ms,
    )


def store_errors() -> tuple[type[Exception], ...]:
    """What a failing store raises: redis-py's errors, and its cluster client's own (an uncovered
    slot, no node reachable), which are not ``RedisError``."""
    import redis  # aisle[server]

    return (redis.RedisError, redis.exceptions.RedisClusterException)


def connect(url: str, timeout_s: float = 0.5) -> Any:
    """A ``redis.Redis`` (or ``redis.cluster.RedisCluster``) for ``url``: short timeouts, one
    immediate retry (a pooled connection that a restart or a failover closed is replaced), strings
    decoded. The socket timeout leaves room for ``replica_timeout_ms``: ``WAIT`` blocks that long."""
    import redis  # aisle[server]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    spec = parse_state_url(url)
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r} must be > 0")
    socket_timeout = timeout_s + (spec.replica_timeout_s if spec.replicas else 0.0)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": True,
    }
    if not spec.cluster:
        return redis.Redis.from_url(spec.redis_url, **common)
    from redis.cluster import ClusterNode, RedisCluster

    return LazyCluster(
        lambda: RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in spec.nodes],
            username=spec.username,
            password=spec.password,
            ssl=spec.tls,
            reinitialize_steps=1,  # a MOVED after a failover: learn the whole new topology at once
            topology_refresh_min_interval=0.2,
            **common,
        )
    )


class LazyCluster:
    """A ``RedisCluster`` made on first use, and again on each use until one could be made.

    ``RedisCluster()`` reads the slot map from a node as it is made and raises when none answers;
    one Redis's client connects only on its first command. Made lazily, a model still loads while
    the cluster is down (``track`` answers UNAVAILABLE, ``recommend`` reads nothing) and uses it once
    it is back, as it does with one Redis.
    """

    def __init__(self, make: Any):
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()  # RedisClusterException while no node answers: a store error
        return getattr(self._client, name)
