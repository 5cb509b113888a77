"""Property-based fuzzing of the SDK and of raw gRPC requests to every model (a few hundred cases).

The strategies and the per-case checks live in ``perf.fuzzing`` and are shared with
``python -m perf.fuzz``, which runs 10,000+ of them. Every case gets a valid result or a clean
``InvalidRequest`` / ``INVALID_ARGUMENT``; the server stays alive and its memory bounded.
"""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, Phase, given, settings

from aisle import RecClient
from perf import fuzzing
from perf.lib.procstats import tree_rss

pytestmark = pytest.mark.integration

CI = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
# The first multi-MB inputs raise the stubs' allocator high-water mark once: 350 cases here grew RSS by
# ~410 MB, 10,000 cases in perf.fuzz by ~370 MB — growth that does not scale with the case count.
RSS_GROWTH_LIMIT_MB = 1024


@pytest.fixture(scope="module")
def rss_watch(server):
    before = tree_rss(server.pid)["total"]
    yield server
    after = tree_rss(server.pid)["total"]
    print(f"fuzz RSS tritonserver+stubs: {before / 2**20:.0f} MB → {after / 2**20:.0f} MB")
    assert server.is_running()
    assert (after - before) / 2**20 < RSS_GROWTH_LIMIT_MB


def test_sdk_fuzz(rss_watch):
    with RecClient(rss_watch.grpc_url, timeout_s=60, retry=None, embed_cache_size=0) as client:

        @settings(CI, max_examples=150)
        @given(fuzzing.sdk_cases)
        def case(c) -> None:
            fuzzing.run_sdk_case(client, c)

        case()
        assert len(client.recommend("still serving", k=3)) == 3


def test_raw_grpc_fuzz_every_model(rss_watch):
    triton = grpcclient.InferenceServerClient(rss_watch.grpc_url)
    try:
        models = fuzzing.model_metadata(triton, fuzzing.RAW_MODELS)

        @settings(CI, max_examples=200)
        @given(fuzzing.raw_requests(models))
        def case(c) -> None:
            fuzzing.run_raw_case(triton, c)

        case()
        assert triton.is_server_live() and triton.is_server_ready()
    finally:
        triton.close()
