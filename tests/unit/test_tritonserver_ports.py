"""A port ``TritonServer`` chose itself and lost to another process before tritonserver bound it is
chosen again (two test workers start servers side by side); a port the caller gave is never changed."""

from __future__ import annotations

import pytest

from aisle_server.tritonserver import PORT_ATTEMPTS, TritonServer, TritonServerError

TAKEN = TritonServerError(
    "tritonserver exited with code 1 before it was ready; \"Socket '127.0.0.1:1' already in use\""
)


def test_a_taken_port_it_chose_is_chosen_again(tmp_path, monkeypatch):
    server = TritonServer(tmp_path)
    seen = []

    def start_once_taken():
        seen.append((server.grpc_port, server.http_port, server.metrics_port))
        if len(seen) == 1:
            raise TAKEN
        return server

    monkeypatch.setattr(server, "_start", start_once_taken)
    assert server.start() is server
    assert len(seen) == 2 and seen[0] != seen[1]


def test_given_ports_and_other_failures_are_not_retried(tmp_path, monkeypatch):
    fixed = TritonServer(tmp_path, grpc_port=18001, http_port=18000, metrics_port=18002)
    calls = []
    monkeypatch.setattr(fixed, "_start", lambda: calls.append(1) or (_ for _ in ()).throw(TAKEN))
    with pytest.raises(TritonServerError, match="already in use"):
        fixed.start()
    assert calls == [1] and fixed.grpc_port == 18001
    chosen = TritonServer(tmp_path)
    monkeypatch.setattr(chosen, "_start", lambda: calls.append(2) or (_ for _ in ()).throw(TAKEN))
    with pytest.raises(TritonServerError):
        chosen.start()
    assert calls.count(2) == PORT_ATTEMPTS
