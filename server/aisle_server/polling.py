"""Follow what other processes write to the state store: refresh every ``interval_s`` in a daemon thread.

Each ``rerank`` instance follows three logs this way — live catalog changes
(``live_catalog.LiveCatalog``), rule sets (``rule_store.LiveRules``) and the tracked events that
exploration counts (``exploration.ExposureCounts``) — so a write lands on every instance within one
interval. A failed refresh is logged and the next one tries again: a store that is down for a while
must not end the thread that would notice it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

LOG = logging.getLogger(__name__)


class Poller:
    """Calls ``refresh`` every ``interval_s`` seconds in a daemon thread named ``name`` until :meth:`stop`;
    ``failure()`` says what a failed refresh was doing, logged on ``log`` (the follower's own logger)."""

    def __init__(
        self,
        refresh: Callable[[], object],
        interval_s: float,
        name: str,
        failure: Callable[[], str],
        log: logging.Logger = LOG,
    ):
        self.refresh = refresh
        self.log = log
        self.interval_s = interval_s
        self.name = name
        self.failure = failure
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, refresh_first: bool = False) -> None:
        """Start the thread (once; later calls do nothing). ``refresh_first``: the thread refreshes at
        once, for a first read too long for the caller to wait for."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(refresh_first,), name=self.name, daemon=True)
                self._thread.start()

    def _run(self, refresh_first: bool) -> None:
        if refresh_first:
            self.refresh()
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:
                self.log.exception("%s failed", self.failure())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
