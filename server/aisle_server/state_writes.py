"""Writes that are acknowledged only once they are replicated: a Lua script, then ``WAIT``, on one connection.

A Redis master answers a write before its replicas have it; if the master dies in between, a
replica is promoted without the write, and an event the shopper's ``track`` saw acknowledged is
gone. ``WAIT numreplicas timeout`` blocks until the writes *of the connection it is sent on* reach
``numreplicas`` replicas (Redis 7.0; ``WAITAOF``, which also waits for their AOF fsync, is 7.2).
So the script and its ``WAIT`` go out as one pipeline on one connection to the master of the
script's slot, and fewer replicas than asked for within ``replica_timeout_ms`` raises
``StateUnavailable`` — gRPC UNAVAILABLE, which the SDK retries — never an acknowledgement. The
write did happen on the master: the retry finds it (``track``'s dedupe key, and its script
re-writes that key so that the retry's own ``WAIT`` covers the first write too; a catalog change
is re-applied, which sets the same fields again).

On a cluster the master of a slot is looked up in the client's slot map; a ``MOVED``, a
``CLUSTERDOWN`` or a ``READONLY`` answer (the slot moved, a failover is under way, the old master
came back as a replica) refreshes the map, and the write is sent once more — those answers mean the
script did not run. A connection error also refreshes the map but is raised: the script may have
run, and the caller's retry is what is safe.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from .errors import StateUnavailable
from .state_url import StateUrl, store_errors

LOG = logging.getLogger("aisle.state")


class NotReplicated(StateUnavailable):
    """The master took the write but too few replicas confirmed it in time: not acknowledged."""


#: One script call: (script, keys, args); its keys share one slot.
Call = tuple[str, Sequence[str], Sequence[object]]


class SlotWrites:
    """Run Lua scripts on the master of their keys' slot, waiting for ``spec.replicas`` replicas.

    The calls of one master go out as one pipeline ending in one ``WAIT``, which covers them all.
    """

    def __init__(self, client: Any, spec: StateUrl):
        self.client = client
        self.spec = spec
        self.cluster = spec.cluster

    def _node(self, key: str) -> tuple[str, Any]:
        if not self.cluster:
            return "", self.client
        node = self.client.get_node_from_key(key)
        if node.redis_connection is None:  # a node the map learned but never connected to
            self.client.nodes_manager.initialize()
            node = self.client.get_node_from_key(key)
        return node.name, node.redis_connection

    def _refresh(self) -> None:
        if not self.cluster:
            return
        try:
            self.client.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the next call tries again
            LOG.info("refreshing the cluster's slot map failed: %s", exc)

    def _pipeline(self, node: Any, calls: Sequence[Call], eval_text: bool) -> list[Any]:
        pipe = node.pipeline(transaction=False)
        for script, keys, args in calls:
            body = script if eval_text else sha1(script)
            pipe.execute_command("EVAL" if eval_text else "EVALSHA", body, len(keys), *keys, *args)
        if self.spec.replicas:
            pipe.execute_command("WAIT", self.spec.replicas, self.spec.replica_timeout_ms)
        replies = pipe.execute(raise_on_error=False)
        import redis

        ran = any(not isinstance(reply, redis.exceptions.NoScriptError) for reply in replies[: len(calls)])
        if (
            self.spec.replicas
            and ran
            and not isinstance(replies[-1], Exception)
            and int(replies[-1]) < self.spec.replicas
        ):
            raise NotReplicated(
                f"state store {self.spec.shown}: {replies[-1]} of {self.spec.replicas} replicas confirmed the "
                f"write within {self.spec.replica_timeout_ms} ms; not acknowledged (a retry is safe)"
            )
        return list(replies)

    def _on_node(self, node: Any, calls: Sequence[Call]) -> list[Any]:
        """The calls' replies from one master: EVALSHA, and EVAL for those whose script it lacked."""
        import redis

        replies = self._pipeline(node, calls, eval_text=False)
        missing = [
            i for i, reply in enumerate(replies[: len(calls)]) if isinstance(reply, redis.exceptions.NoScriptError)
        ]
        if missing:  # those did not run (a new node, a promoted replica): send them with their text
            again = self._pipeline(node, [calls[i] for i in missing], eval_text=True)
            for i, reply in zip(missing, again):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[: len(calls)]

    def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Each call's reply, once ``spec.replicas`` replicas hold its writes; ``StateUnavailable`` otherwise."""
        import redis

        redirects = (
            redis.exceptions.AskError,  # MovedError too
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.SlotNotCoveredError,
        )
        out: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            retry: list[int] = []
            try:
                groups: dict[str, tuple[Any, list[int]]] = {}
                for i in pending:
                    name, node = self._node(calls[i][1][0])
                    groups.setdefault(name, (node, []))[1].append(i)
                for node, indices in groups.values():
                    try:
                        replies = self._on_node(node, [calls[i] for i in indices])
                    except redirects:  # the scripts did not run there: a new slot map, then once more
                        if attempt:
                            raise
                        retry += indices
                        continue
                    for i, reply in zip(indices, replies):
                        out[i] = reply
            except NotReplicated:
                raise
            except store_errors() as exc:
                if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, *redirects)):
                    self._refresh()
                raise StateUnavailable(
                    f"state store {self.spec.shown} unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            if not retry:
                return out
            self._refresh()
            pending = retry
        raise StateUnavailable(f"state store {self.spec.shown} unavailable: the slot map kept changing")

    def run(self, script: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        return self.run_many([(script, keys, args)])[0]


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()
