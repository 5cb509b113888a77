"""Load generator for the systems perf_analyzer cannot drive (in-process, FastAPI, one model).

Closed loop (default): ``concurrency`` worker threads each send the next request of the shared mix
as soon as their previous one returns (perf_analyzer's concurrency mode, so the numbers line up),
after a warm-up. Open loop (``rate_per_s``): requests fall due at a fixed rate and the next free
worker sends each when due (at most ``concurrency`` in flight); a request's latency counts from
when it fell due, so a send delayed by busy workers shows as waiting, as a shopper would see it.
It reports throughput over the measurement window and p50/p95/p99 (:func:`perf.lib.timing.percentile`)
of the latencies of the requests *completed* in it; errors are counted, never timed.

Targets (``make_*`` return a ``call(request) -> None`` per worker, each with its own connection):

- ``http``: POST JSON ``{"query", "k"}`` to a URL (the FastAPI baseline), keep-alive per worker;
- ``inprocess``: a Python callable (the in-process baseline);
- ``triton``: the ``recommend`` ensemble over gRPC with tritonclient — the same Python client cost
  as ``http``, to check that perf_analyzer's C++ client does not flatter Triton.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from perf.lib.timing import percentile

Call = Callable[[dict], None]


@dataclass
class LoadResult:
    concurrency: int
    completed: int
    errors: int
    window_s: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    #: with ``run(side_of=...)``: the same figures per side of the mix (``to_dict`` of each)
    sides: dict[str, dict] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(concurrency: int, latencies_s: Sequence[float], errors: int, window_s: float) -> LoadResult:
    ms = [x * 1000 for x in latencies_s]
    return LoadResult(
        concurrency=concurrency,
        completed=len(ms),
        errors=errors,
        window_s=window_s,
        throughput=len(ms) / window_s if window_s > 0 else math.nan,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
    )


def run(
    make_call: Callable[[], Call],
    requests: Sequence[dict],
    concurrency: int,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    max_requests: int | None = None,
    rate_per_s: float | None = None,
    side_of: Callable[[dict], str] | None = None,
) -> LoadResult:
    """Drive ``concurrency`` workers for ``warmup_s + duration_s`` (bounded by ``max_requests``):
    closed loop, or with ``rate_per_s`` requests falling due at that fixed rate (open loop).

    ``side_of``: the side each request of the mix belongs to (e.g. with and without a feature,
    alternating request by request), summarized apart in ``LoadResult.sides``: both sides then meet
    the same moments of a shared machine, which back-to-back windows do not."""
    if concurrency < 1 or not requests:
        raise ValueError("need concurrency >= 1 and at least one request")
    lock = threading.Lock()
    latencies: list[float] = []
    sided: list[tuple[str, float | None]] = []  # (side, latency; None: an error)
    errors = [0]
    sent = [0]
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    def worker(worker_id: int) -> None:
        call = make_call()
        i = worker_id
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            with lock:
                if max_requests is not None and sent[0] >= max_requests:
                    break
                slot = sent[0]
                sent[0] += 1
            if rate_per_s:
                due = start + slot / rate_per_s
                if due >= stop_at:
                    break
                time.sleep(max(0.0, due - time.perf_counter()))
                request = requests[slot % len(requests)]
            else:
                request = requests[i % len(requests)]
                i += concurrency
            t0 = due if rate_per_s else time.perf_counter()
            try:
                call(request)
                ok = True
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                with lock:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors[0] += 1
                    if side_of is not None:
                        sided.append((side_of(request), t1 - t0 if ok else None))
        close = getattr(call, "close", None)
        if close is not None:
            close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + warmup_s + 120)
    window = min(time.perf_counter(), stop_at) - measure_from
    result = summarize(concurrency, latencies, errors[0], window)
    if side_of is not None:
        result.sides = {
            side: summarize(
                concurrency,
                [x for s, x in sided if s == side and x is not None],
                sum(1 for s, x in sided if s == side and x is None),
                window,
            ).to_dict()
            for side in sorted({s for s, _ in sided})
        }
    return result


class HttpCall:
    """POST ``{"query", "k"}`` as JSON on one keep-alive connection; raises on a non-200."""

    def __init__(self, url: str, timeout_s: float = 60.0):
        parts = urlsplit(url)
        self.path = parts.path or "/"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)

    def __call__(self, request: dict) -> None:
        body = json.dumps({"query": request["query"], "k": request["k"]})
        self.connection.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")

    def close(self) -> None:
        self.connection.close()


def make_http(url: str) -> Callable[[], Call]:
    return lambda: HttpCall(url)


class TritonCall:
    """``recommend`` with QUERY and K over gRPC, one client per worker."""

    def __init__(self, url: str, model: str = "recommend", timeout_s: float = 60.0):
        import numpy as np
        import tritonclient.grpc as grpcclient

        self.np, self.grpc = np, grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.model, self.timeout_s = model, timeout_s
        self.outputs = [grpcclient.InferRequestedOutput("ITEM_IDS"), grpcclient.InferRequestedOutput("SCORES")]

    def __call__(self, request: dict) -> None:
        np, grpc = self.np, self.grpc
        query = grpc.InferInput("QUERY", [1, 1], "BYTES")
        query.set_data_from_numpy(np.array([[request["query"].encode()]], dtype=object))
        k = grpc.InferInput("K", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[request["k"]]], dtype=np.int32))
        self.client.infer(self.model, [query, k], outputs=self.outputs, client_timeout=self.timeout_s)

    def close(self) -> None:
        self.client.close()


def make_triton(url: str, model: str = "recommend") -> Callable[[], Call]:
    return lambda: TritonCall(url, model)


def make_inprocess(fn: Callable[[str, int], object]) -> Callable[[], Call]:
    return lambda: lambda request: fn(request["query"], request["k"])
