"""The poller every rerank instance follows the state store with: a failed refresh is logged and the next one runs."""

from __future__ import annotations

import logging
import threading

from aisle_server.polling import Poller


def test_a_failed_refresh_is_logged_and_polling_goes_on(caplog):
    calls = []
    third = threading.Event()

    def refresh():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store down")
        if len(calls) >= 3:
            third.set()

    poller = Poller(refresh, 0.01, "test-poller", lambda: "reading the test log", logging.getLogger("aisle.test"))
    with caplog.at_level(logging.ERROR, logger="aisle.test"):
        poller.start()
        poller.start()  # once: a second start adds no thread
        assert third.wait(10)
        poller.stop()
    assert [r.getMessage() for r in caplog.records] == ["reading the test log failed"]
    assert sum(t.name == "test-poller" for t in threading.enumerate()) == 0


def test_refresh_first_runs_in_the_thread_before_the_first_interval():
    ran = threading.Event()
    poller = Poller(ran.set, 3600.0, "test-first", lambda: "x")
    poller.start(refresh_first=True)
    assert ran.wait(10)
    poller.stop()
