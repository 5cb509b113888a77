"""A port ``TritonServer`` chose itself and lost to another process before tritonserver bound it is
chosen again (two test workers start servers side by side); a port the caller gave is never changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisle_server.tritonserver import PORT_ATTEMPTS, TritonServer, TritonServerError, free_ports, server_ports

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


def test_an_abort_of_tritonserver_while_its_stubs_start_is_started_again(tmp_path, monkeypatch, caplog):
    server = TritonServer(tmp_path, grpc_port=18001, http_port=18000, metrics_port=18002)  # kept as given
    aborted = TritonServerError(
        "tritonserver exited with code -6 before it was ready; from log:\n"
        "terminate called after throwing an instance of 'boost::interprocess::lock_exception'"
    )
    calls = []

    def start_once_aborted():
        calls.append(server.grpc_port)
        if len(calls) == 1:
            raise aborted
        return server

    monkeypatch.setattr(server, "_start", start_once_aborted)
    assert server.start() is server
    assert calls == [18001, 18001] and "aborted while its Python-backend stubs started" in caplog.text


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


def test_one_servers_ports_are_chosen_distinct():
    # a port chosen, released and chosen again for the same server made tritonserver refuse to start
    # ("cannot listen to HTTP requests and GRPC requests at the same address and port"); one port at
    # a time, a triple held a repeat about once in a thousand here (10,000 triples: caught 9 times in 10)
    assert all(len(set(free_ports(3))) == 3 for _ in range(10_000))
    given = free_ports(1)[0]
    assert all(given not in free_ports(3, avoid=[given]) for _ in range(300))
    server = TritonServer(Path("."), grpc_port=given)  # the two it chooses are neither each other nor the given one
    assert len({server.grpc_port, server.http_port, server.metrics_port}) == 3 and server.grpc_port == given
    ports = server_ports()
    assert set(ports) == {"grpc_port", "http_port", "metrics_port"} and len(set(ports.values())) == 3
