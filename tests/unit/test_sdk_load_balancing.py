"""Client-side load balancing: which gRPC policy a target gets, the channel options that carry it, and
real gRPC channels (through tritonclient, as the SDK opens them) against two in-process gRPC servers
speaking Triton's protocol: calls alternate between them, and retries move off a server that fails.

No tritonserver here (tests/integration/test_sdk_balancing.py runs two real ones; this file has another
name because pytest imports both directories' tests by their base names).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from aisle import AsyncRecClient, InvalidRequest, RecClient, RetryPolicy
from aisle._core import DNS_MIN_RESOLUTION_INTERVAL_MS, channel_args, lb_policy

# What a plain host:port channel carried before load balancing existed: it must not change.
PLAIN_OPTIONS = [
    "grpc.max_send_message_length",
    "grpc.max_receive_message_length",
    "grpc.keepalive_time_ms",
    "grpc.keepalive_timeout_ms",
    "grpc.keepalive_permit_without_calls",
    "grpc.http2.max_pings_without_data",
    "grpc.initial_reconnect_backoff_ms",
    "grpc.min_reconnect_backoff_ms",
    "grpc.max_reconnect_backoff_ms",
]


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("127.0.0.1:8001", "pick_first"),
        ("localhost:8001", "pick_first"),
        ("aisle-triton.aisle.svc.cluster.local:8001", "pick_first"),
        ("[::1]:8001", "pick_first"),
        ("unix:/tmp/triton.sock", "pick_first"),
        ("dns:///aisle-triton-pods.aisle.svc.cluster.local:8001", "round_robin"),
        ("dns://10.96.0.10/aisle-triton-pods.aisle.svc:8001", "round_robin"),
        ("DNS:///aisle-triton-pods:8001", "round_robin"),
        ("ipv4:127.0.0.1:8001,127.0.0.1:8002", "round_robin"),
        ("ipv4:127.0.0.1:8001", "round_robin"),
        ("ipv6:[::1]:8001,[::1]:8002", "round_robin"),
    ],
)
def test_auto_balances_targets_that_name_several_servers(url, policy):
    assert lb_policy(url) == policy == lb_policy(url, "auto")


def test_an_explicit_policy_wins_and_a_bad_one_is_refused():
    assert lb_policy("127.0.0.1:8001", "round_robin") == "round_robin"
    assert lb_policy("dns:///pods:8001", "pick_first") == "pick_first"
    for bad in ("roundrobin", "", None, "grpclb"):
        with pytest.raises(InvalidRequest, match="load_balancing"):
            lb_policy("127.0.0.1:8001", bad)  # type: ignore[arg-type]  # a wrong value on purpose
    with pytest.raises(InvalidRequest, match="load_balancing"):
        RecClient("127.0.0.1:8001", load_balancing="random")  # type: ignore[arg-type]  # a wrong value on purpose


def test_a_plain_address_keeps_exactly_the_channel_options_it_had():
    assert [name for name, _ in channel_args()] == PLAIN_OPTIONS
    assert channel_args() == channel_args(policy="pick_first")
    balanced = dict(channel_args(policy="round_robin"))
    assert list(balanced)[: len(PLAIN_OPTIONS)] == PLAIN_OPTIONS
    assert balanced["grpc.lb_policy_name"] == "round_robin"
    assert balanced["grpc.dns_min_time_between_resolutions_ms"] == DNS_MIN_RESOLUTION_INTERVAL_MS
    assert len(balanced) == len(PLAIN_OPTIONS) + 2


class Recorder:
    """Stands in for a tritonclient class: records what the SDK opens its channel with."""

    def __init__(self):
        self.opened: list[tuple[str, dict]] = []

    def __call__(self, url, channel_args=None, **tls):
        self.opened.append((url, dict(channel_args)))
        return self

    def close(self):
        return None


@pytest.mark.parametrize(
    ("url", "option", "policy"),
    [
        ("127.0.0.1:8001", "auto", None),
        ("127.0.0.1:8001", "pick_first", None),
        ("127.0.0.1:8001", "round_robin", "round_robin"),
        ("ipv4:127.0.0.1:8001,127.0.0.1:8002", "auto", "round_robin"),
        ("dns:///aisle-triton-pods.aisle.svc.cluster.local:8001", "auto", "round_robin"),
        ("dns:///aisle-triton-pods.aisle.svc.cluster.local:8001", "pick_first", None),
    ],
)
def test_both_clients_hand_the_target_and_the_policy_to_tritonclient(monkeypatch, url, option, policy):
    sync_class, async_class = Recorder(), Recorder()
    monkeypatch.setattr(grpcclient, "InferenceServerClient", sync_class)
    monkeypatch.setattr(aioclient, "InferenceServerClient", async_class)
    client = RecClient(url, load_balancing=option)
    client.close()

    async def open_async():
        aclient = AsyncRecClient(url, load_balancing=option)
        await aclient.connect()
        return aclient.load_balancing

    assert asyncio.run(open_async()) == client.load_balancing == (policy or "pick_first")
    assert sync_class.opened == async_class.opened  # one core: the same channel for both clients
    [(target, options)] = sync_class.opened
    assert target == url  # tritonclient passes it to grpc.insecure_channel as the target, unchanged
    assert options.get("grpc.lb_policy_name") == policy
    if policy is None:
        assert options == dict(channel_args())


# -- real gRPC channels against two in-process servers speaking Triton's protocol --------------------
DIM = 4


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers ServerLive and ModelInfer (an ``EMBEDDING`` of the server's number); counts the calls.

    ``failing`` makes it answer inference with UNAVAILABLE, as a server shedding or shutting down does.
    """

    def __init__(self, number: int):
        self.number = number
        self.live = 0
        self.infer = 0
        self.refused = 0
        self.failing = False
        self.lock = threading.Lock()

    def ServerLive(self, request, context):
        with self.lock:
            self.live += 1
        return service_pb2.ServerLiveResponse(live=True)

    def ModelInfer(self, request, context):
        with self.lock:
            if self.failing:
                self.refused += 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
            self.infer += 1
        rows = request.inputs[0].shape[0]
        output = service_pb2.ModelInferResponse.InferOutputTensor(name="EMBEDDING", datatype="FP32", shape=[rows, DIM])
        vectors = np.full((rows, DIM), self.number, dtype=np.float32)
        return service_pb2.ModelInferResponse(
            model_name=request.model_name, outputs=[output], raw_output_contents=[vectors.tobytes()]
        )


@pytest.fixture
def two_servers():
    started = []
    for number in (1, 2):
        fake = FakeTriton(number)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append((fake, server, port))
    yield started
    for _, server, _ in started:
        server.stop(None)


def target(servers) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, _, port in servers)


CALLS = 40
RETRY = RetryPolicy(max_attempts=10, initial_backoff_s=0.001, max_backoff_s=0.01)


def embed_calls(client, prefix: str, n: int = CALLS) -> list[float]:
    """``n`` embed calls (distinct texts, uncached); the number of the server that answered each."""
    return [float(client.embed([f"{prefix} {i}"], cache=False)[0][0]) for i in range(n)]


async def async_embed_calls(client, prefix: str, n: int = CALLS) -> list[float]:
    return [float((await client.embed([f"{prefix} {i}"], cache=False))[0][0]) for i in range(n)]


def run_async(url: str, load_balancing: str, prefix: str, n: int = CALLS, **options) -> list[float]:
    async def main():
        async with AsyncRecClient(url, load_balancing=load_balancing, timeout_s=10, **options) as client:
            return await async_embed_calls(client, prefix, n)

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_round_robin_spreads_calls_over_every_server(two_servers, kind):
    url = target(two_servers)
    if kind == "sync":
        with RecClient(url, timeout_s=10) as client:
            assert client.load_balancing == "round_robin"
            answered = embed_calls(client, kind)
    else:
        answered = run_async(url, "auto", kind)
    counts = [fake.infer for fake, _, _ in two_servers]
    assert sum(counts) == CALLS and answered.count(1.0) == counts[0] and answered.count(2.0) == counts[1]
    assert min(counts) >= CALLS // 3, counts  # round robin alternates: about half each


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_pick_first_sends_every_call_to_one_server(two_servers, kind):
    """What a channel did before, and still does with ``load_balancing="pick_first"``: one connection."""
    url = target(two_servers)
    if kind == "sync":
        with RecClient(url, load_balancing="pick_first", timeout_s=10) as client:
            embed_calls(client, kind)
    else:
        run_async(url, "pick_first", kind)
    assert sorted(fake.infer for fake, _, _ in two_servers) == [0, CALLS]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_retry_moves_to_the_other_server_when_one_refuses(two_servers, kind):
    """Server 2 answers UNAVAILABLE (as a server shutting down does) while its connection stays up:
    each call it gets is retried, and round robin sends the retry to server 1; no call fails."""
    (first, _, _), (second, _, _) = two_servers
    second.failing = True
    url = target(two_servers)
    if kind == "sync":
        with RecClient(url, timeout_s=10, retry=RETRY) as client:
            answered = embed_calls(client, kind)
    else:
        answered = run_async(url, "auto", kind, retry=RETRY)
    assert answered == [1.0] * CALLS
    assert first.infer == CALLS and second.infer == 0
    assert second.refused >= CALLS // 3, second.refused  # it did get (and refuse) its share of first attempts


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stopped_server_leaves_the_rotation(two_servers, kind):
    """Server 2 stops (its connections close): every later call goes to server 1 and succeeds."""
    (first, _, _), (second, server, _) = two_servers
    url = target(two_servers)
    if kind == "sync":
        with RecClient(url, timeout_s=10, retry=RETRY) as client:
            before = embed_calls(client, kind, 10)
            server.stop(None).wait()
            after = embed_calls(client, kind)
    else:

        async def main():
            async with AsyncRecClient(url, timeout_s=10, retry=RETRY) as client:
                before = await async_embed_calls(client, kind, 10)
                await asyncio.to_thread(lambda: server.stop(None).wait())
                return before, await async_embed_calls(client, kind)

        before, after = asyncio.run(main())
    assert set(before) == {1.0, 2.0}
    assert after == [1.0] * CALLS
    assert first.infer == before.count(1.0) + CALLS and second.infer == before.count(2.0)
