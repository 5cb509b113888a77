"""Kill the server (SIGKILL) mid-run and restart it on the same ports: calls with time and retries left
all succeed on the same client (the one gRPC channel reconnects). Also: restricted-protocol headers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aisle import AsyncRecClient, PermissionDenied, RecClient, RetryPolicy
from aisle_server.tritonserver import TritonServer, server_ports

pytestmark = pytest.mark.integration
HEADER = {"triton-grpc-protocol-aisle-key": "s3cret"}  # Triton prefixes the key it was given
RESTRICT = ["--grpc-restricted-protocol=inference:aisle-key=s3cret"]


def test_kill_and_restart_loses_no_call(repo, tmp_path):
    ports = server_ports()
    log = tmp_path / "tritonserver.log"
    retry = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.5)
    server = TritonServer(repo, log_file=log, extra_args=RESTRICT, **ports).start()
    results: list[tuple[str, object]] = []
    stop = threading.Event()
    try:
        with RecClient(server.grpc_url, timeout_s=90, retry=retry, headers=HEADER, wait_ready_s=30) as client:
            with pytest.raises(PermissionDenied):  # the header is what lets calls in
                with RecClient(server.grpc_url, timeout_s=5) as stranger:
                    stranger.recommend("no key")

            def worker(n: int) -> None:
                i = 0
                while not stop.is_set():
                    try:
                        recs = client.recommend(f"worker {n} call {i}", k=3, now=1e9, cache=False)
                        results.append(("ok", len(recs)))
                    except Exception as exc:  # noqa: BLE001 - any failure is recorded and judged below - recorded and asserted below
                        results.append(("error", repr(exc)))
                    i += 1

            async def async_worker() -> None:
                async with AsyncRecClient(server.grpc_url, timeout_s=90, retry=retry, headers=HEADER) as aclient:
                    i = 0
                    while not stop.is_set():
                        try:
                            recs = await aclient.recommend(f"async call {i}", k=3, now=1e9)
                            results.append(("ok", len(recs)))
                        except Exception as exc:  # noqa: BLE001 - any failure is recorded and judged below
                            results.append(("error", repr(exc)))
                        i += 1

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            threads.append(threading.Thread(target=lambda: asyncio.run(async_worker())))
            for t in threads:
                t.start()
            time.sleep(1.0)
            served_before = len(results)
            server._process.kill()  # SIGKILL: no drain, in-flight calls are cut
            server._process.wait()
            server.stop()
            time.sleep(1.0)
            server = TritonServer(repo, log_file=log, extra_args=RESTRICT, **ports).start()
            restarted_at = len(results)
            time.sleep(2.0)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            assert client.recommend("after restart", k=2).__len__() == 2
    finally:
        stop.set()
        server.stop()
    errors = [r for r in results if r[0] == "error"]
    assert not errors, errors[:5]
    assert served_before > 0 and len(results) > restarted_at, (served_before, restarted_at, len(results))
    assert all(n == 3 for _, n in results)
