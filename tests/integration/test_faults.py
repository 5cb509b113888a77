"""Faults: the server killed mid-load and restarted, and a Python-backend model that raises.

1. SIGKILL under load: while the server is down every SDK call raises a typed error within its
   deadline (never hangs, never leaks a grpc/tritonclient exception); once a new server is up on
   the same port, the same client — same process, same channel — answers again. ``stop()`` ends
   the orphaned stubs and unlinks the shared memory the kill left in ``/dev/shm``.
2. A test-only Python model (written here into a tiny repository, built on
   ``aisle_server.triton_adapter.handle_each``) raises on a magic input: the requests batched with
   it in the same dynamic batch succeed, that one gets ``ServerError``, and the model keeps serving.
3. A repository with a model that cannot load: ``TritonServer.start`` fails at once (the server
   exits, nothing is left running) and its error carries the log lines that say which model and why.
"""

from __future__ import annotations

import collections
import json
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisle import AisleError, DeadlineExceeded, RecClient, RetryPolicy, ServerError, ServerUnavailable
from aisle.errors import from_triton
from aisle_server.processes import process_group_members
from aisle_server.tritonserver import TritonServer, TritonServerError, server_ports

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0
SLACK_S = 1.5  # scheduling noise on a shared 2-core machine
RECONNECT_S = 1.5  # the SDK channel's longest reconnect backoff (1 s + 20% jitter) plus scheduling slack


def test_kill_mid_load_raises_within_deadline_and_recovers(repo, tmp_path):
    ports = server_ports()
    log = tmp_path / "tritonserver.log"
    server = TritonServer(repo, log_file=log, **ports).start()
    records: list[tuple[float, str, float]] = []  # (start, outcome, elapsed)
    stop = threading.Event()
    retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.3)
    try:
        with RecClient(server.grpc_url, timeout_s=TIMEOUT_S, retry=retry, embed_cache_size=0) as client:

            def worker(n: int) -> None:
                i = 0
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        client.recommend(f"worker {n} call {i}", k=3, cache=False)
                        outcome = "ok"
                    except AisleError as exc:
                        outcome = type(exc).__name__
                    except Exception as exc:  # noqa: BLE001 - a leaked non-SDK exception fails the test
                        outcome = f"LEAKED {type(exc).__module__}.{type(exc).__name__}"
                    records.append((t0, outcome, time.monotonic() - t0))
                    i += 1
                    time.sleep(0.02)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
            for t in threads:
                t.start()
            time.sleep(2.0)
            stubs = set(process_group_members(server.pid)) - {server.pid}
            regions = server.shared_memory_regions()
            killed_at = time.monotonic()
            server._process.kill()  # SIGKILL mid-load: no drain
            server._process.wait()
            left_by_the_kill = server.shared_memory_regions()
            server.stop()
            assert stubs, "the Python-backend models' stubs run in tritonserver's process group"
            assert not stubs & set(process_group_members(server.pid)), "stop() must end the orphaned stubs"
            # the stubs' shared memory carries this server's prefix; a kill leaves it, stop() removes it
            assert len(regions) >= len(stubs) and left_by_the_kill, (regions, left_by_the_kill)
            assert not server.shared_memory_regions(), "stop() must unlink the regions the kill left"
            time.sleep(4.0)  # down for a while: calls must fail fast, within their deadline
            restarting_at = time.monotonic()
            server = TritonServer(repo, log_file=log, **ports).start()
            ready_at = time.monotonic()
            time.sleep(3.0)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert len(client.recommend("same client, after the restart", k=3, cache=False)) == 3
    finally:
        stop.set()
        server.stop()

    kinds = collections.Counter(outcome for _, outcome, _ in records)
    down = [r for r in records if killed_at <= r[0] < restarting_at]
    # The channel retries its connection at most every second (+20% jitter, `channel_args`), so a
    # call may still find it backing off up to ~1.2 s after the server is ready; from then on, all succeed.
    after = [r for r in records if r[0] >= ready_at + RECONNECT_S]
    first_ok_after = min((r[0] + r[2] for r in records if r[0] >= killed_at and r[1] == "ok"), default=None)
    summary = {
        "requests": len(records),
        "results_by_kind": dict(kinds),
        "calls_while_down": len(down),
        "max_elapsed_s": round(max(r[2] for r in records), 2),
        "down_s": round(restarting_at - killed_at, 1),
        "restart_s": round(ready_at - restarting_at, 1),
        "first_ok_after_ready_s": round(first_ok_after - ready_at, 2) if first_ok_after else None,
        "after_ready_failures": sum(r[1] != "ok" for r in after),
    }
    print("kill and restart:", json.dumps(summary))
    assert not [k for k in kinds if k.startswith("LEAKED")], kinds
    assert set(kinds) <= {"ok", ServerUnavailable.__name__, DeadlineExceeded.__name__}, kinds
    assert down and all(outcome != "ok" for _, outcome, _ in down)
    assert all(elapsed <= TIMEOUT_S + SLACK_S for _, _, elapsed in records), summary
    assert after and all(outcome == "ok" for _, outcome, _ in after), summary


FAULTY_MODEL_PY = textwrap.dedent('''
    """Test-only model: TEXT → LENGTH, raises on the magic input b"boom"."""
    import os
    import site

    for directory in os.environ.get("AISLE_SITE_PACKAGES", "").split(os.pathsep):  # as the real model.py files
        if directory:
            site.addsitedir(directory)

    import numpy as np

    from aisle_server.triton_adapter import handle_each


    class TritonPythonModel:
        def initialize(self, args):
            import triton_python_backend_utils

            self.pb_utils = triton_python_backend_utils

        def length(self, inputs):
            texts = inputs["TEXT"].reshape(-1)
            if any(t == b"boom" for t in texts):
                raise RuntimeError("boom on purpose")
            return {"LENGTH": np.array([[len(t)] for t in texts], dtype=np.int32)}

        def execute(self, requests):
            return handle_each(self.pb_utils, requests, ["TEXT"], self.length)
''')


def _faulty_repository(root: Path) -> Path:
    config = mc.ModelConfig(
        name="faulty",
        backend="python",
        max_batch_size=16,
        input=[mc.ModelInput(name="TEXT", data_type=mc.TYPE_STRING, dims=[1])],
        output=[mc.ModelOutput(name="LENGTH", data_type=mc.TYPE_INT32, dims=[1])],
        # a long batching window so that the concurrent requests below share one execute() call
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=300_000, preferred_batch_size=[8]),
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    (root / "faulty" / "1").mkdir(parents=True)
    (root / "faulty" / "config.pbtxt").write_text(text_format.MessageToString(config))
    (root / "faulty" / "1" / "model.py").write_text(FAULTY_MODEL_PY)
    return root


def _text(value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=object))
    return tensor


def test_a_raising_python_model_fails_only_that_request(tmp_path):
    repo = _faulty_repository(tmp_path / "faulty_repository")
    with TritonServer(repo, log_file=tmp_path / "tritonserver.log") as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for round_ in range(3):
                texts = [b"a" * (n + 1) for n in range(7)]
                texts.insert(3, b"boom")
                done: dict[int, object] = {}
                finished = threading.Event()
                expected = len(texts)

                def callback(i: int, result, error, done=done, expected=expected, finished=finished) -> None:
                    done[i] = error if error is not None else result
                    if len(done) == expected:
                        finished.set()

                before = triton.get_inference_statistics("faulty", as_json=True)["model_stats"][0]
                for i, text in enumerate(texts):
                    triton.async_infer(  # tritonclient calls back with keywords result= and error=
                        "faulty", [_text(text)], callback=lambda result, error, i=i: callback(i, result, error)
                    )
                assert finished.wait(60), f"round {round_}: {len(done)} of {len(texts)} answered"
                after = triton.get_inference_statistics("faulty", as_json=True)["model_stats"][0]
                executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))

                for i, text in enumerate(texts):
                    if text == b"boom":
                        error = from_triton(done[i])  # what the SDK raises for it
                        assert isinstance(error, ServerError) and "boom on purpose" in str(error), done[i]
                    else:
                        assert not isinstance(done[i], Exception), (text, done[i])
                        assert int(done[i].as_numpy("LENGTH")[0, 0]) == len(text)
                # the batcher put the magic request in the same execute() call as others at least once
                print(f"faulty model round {round_}: {len(texts)} requests in {executions} executions")
                if executions < len(texts):
                    break
            assert executions < len(texts), "the requests were never batched together"
            assert triton.is_model_ready("faulty")
            assert int(triton.infer("faulty", [_text(b"still fine")]).as_numpy("LENGTH")[0, 0]) == 10
        finally:
            triton.close()


def test_a_server_that_cannot_start_says_why(tmp_path):
    repo = tmp_path / "broken_repository"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "no_such_backend"\nmax_batch_size: 0\n')
    server = TritonServer(repo, log_file=tmp_path / "tritonserver.log")
    with pytest.raises(TritonServerError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited with code" in message, message
    assert "failed to load 'broken'" in message and "no_such_backend" in message, message
    assert not server.is_running()
