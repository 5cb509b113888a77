"""Hostile-input fuzzing at scale (not a unit test): 10,000+ hypothesis cases against a live server.

    .venv/bin/python -m perf.fuzz [--cases 10000] [--repo DIR]

The strategies and checks are :mod:`perf.fuzzing`'s, the same ones ``tests/integration/test_fuzz.py``
runs a few hundred of in CI. Starts its own tritonserver (loopback) over ``--repo`` (exported and
indexed first if it has no index; default: the benchmarks' own, ``build/perf/model_repository``),
samples the RSS of tritonserver and its stubs before and after, checks liveness every 250 cases,
and writes a summary (cases, results by kind, failures with examples, server alive, RSS
before/after) to ``perf/results/fuzz.json``. Exits 1 on any failure or if the server died.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, Phase, given, seed, settings

from aisle import RecClient
from aisle_server.tritonserver import TritonServer
from perf import fuzzing
from perf.lib import repository
from perf.lib.procstats import tree_rss
from perf.lib.run_info import RESULTS


def fuzz(
    target: str,
    cases: int,
    run_one,
    strategy,
    outcomes: collections.Counter,
    failures: list,
    check_alive,
    seed_value: int,
    pid: int,
    rss_trace: list,
) -> None:
    count = [0]

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @seed(seed_value)
    @given(strategy)
    def one(case) -> None:
        try:
            kind = run_one(case)
        except AssertionError as exc:
            kind = "FAILED"
            if len(failures) < 20:
                failures.append(f"{target}: {str(exc)[:500]}")
        except Exception as exc:  # noqa: BLE001 - a leaked exception is a failure too
            kind = f"LEAKED {type(exc).__name__}"
            if len(failures) < 20:
                failures.append(f"{target}: leaked {type(exc).__name__}: {str(exc)[:300]}")
        outcomes[f"{target}:{kind}"] += 1
        count[0] += 1
        if count[0] % 250 == 0:
            check_alive()
            rss_trace.append(round(tree_rss(pid)["total"] / 2**20, 1))
            print(f"{target}: {count[0]} cases, {dict(outcomes)}, RSS {rss_trace[-1]} MB", flush=True)

    one()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="total; 40%% SDK, 60%% raw gRPC")
    parser.add_argument("--seed", type=int, default=20251122)
    parser.add_argument(
        "--repo", type=Path, default=None, help="default: the benchmarks' own, build/perf/model_repository"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    args = parser.parse_args(argv)
    args.repo = repository.cached() if args.repo is None else repository.ensure(args.repo)
    log = args.out.with_name("fuzz_tritonserver.log")
    log.unlink(missing_ok=True)
    outcomes: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    rss_trace: list[float] = []
    started = time.monotonic()
    with (
        TritonServer(args.repo, log_file=log) as server,
        RecClient(server.grpc_url, timeout_s=60, retry=None, embed_cache_size=0) as client,
    ):
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        client.recommend("warm up", k=5)
        rss_before = tree_rss(server.pid)
        models = fuzzing.model_metadata(triton, fuzzing.RAW_MODELS)

        def check_alive() -> None:
            if not (server.is_running() and triton.is_server_live()):
                raise SystemExit("tritonserver died")

        sdk_cases = args.cases * 4 // 10
        fuzz(
            "sdk",
            sdk_cases,
            lambda c: fuzzing.run_sdk_case(client, c),
            fuzzing.sdk_cases,
            outcomes,
            failures,
            check_alive,
            args.seed,
            server.pid,
            rss_trace,
        )
        fuzz(
            "raw",
            args.cases - sdk_cases,
            lambda c: fuzzing.run_raw_case(triton, c),
            fuzzing.raw_requests(models),
            outcomes,
            failures,
            check_alive,
            args.seed + 1,
            server.pid,
            rss_trace,
        )
        alive = server.is_running() and triton.is_server_live() and triton.is_server_ready()
        assert len(client.recommend("still serving", k=5)) == 5
        rss_after = tree_rss(server.pid)
        triton.close()
    total = sum(outcomes.values())
    failed = sum(n for kind, n in outcomes.items() if "FAILED" in kind or "LEAKED" in kind)
    result = {
        "cases": total,
        "results_by_kind": dict(sorted(outcomes.items())),
        "failures": failed,
        "failure_examples": failures,
        "server_alive_after": alive,
        "rss_mb_before": round(rss_before["total"] / 2**20, 1),
        "rss_mb_after": round(rss_after["total"] / 2**20, 1),
        "rss_server_mb_before_after": [round(rss_before["server"] / 2**20, 1), round(rss_after["server"] / 2**20, 1)],
        "rss_stubs_mb_before_after": [round(rss_before["stubs"] / 2**20, 1), round(rss_after["stubs"] / 2**20, 1)],
        "rss_mb_every_250_cases": rss_trace,
        "seconds": round(time.monotonic() - started, 1),
        "seed": args.seed,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if failed == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
