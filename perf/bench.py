"""``make bench``: every system answers the same MovieLens search requests; one report.

    .venv/bin/python perf/bench.py [--repo build/model_repository] [--out perf/results]

Systems, each over the same tower and catalog:

1. **in-process**: sentence-transformers (PyTorch CPU) + numpy top-k, no server (``perf/baselines``);
2. **FastAPI**: the same code behind FastAPI/uvicorn on 127.0.0.1;
3. **Aisle**: the ``recommend`` ensemble on tritonserver, ORT FP32 and ORT INT8 (when the INT8
   config variant exists), with and without dynamic batching, 1 and 2 instances per model, plus
   2 instances with one ORT thread each (no oversubscription of 2 cores).

Phases: (a) concurrency sweeps — perf_analyzer for Aisle, ``perf/loadgen.py`` for the baselines;
(b) on the default configuration, the component models' sweeps, a feed (history) mix and a
Poisson request-rate sweep; (c) *paired rounds* at concurrency 16: FastAPI, Aisle's best
configuration (perf_analyzer and the same Python load generator as FastAPI) and FP32 with/without
dynamic batching, interleaved round by round so a shared machine's noise hits all alike — the
headline ratios come from these. Triton's statistics give the component breakdown.

Outputs in ``--out``: ``bench_results.json`` (everything), ``bench_summary.csv``,
``bench_csv/*.csv`` (perf_analyzer's own CSVs), ``bench_report.md``, ``bench_throughput_p99.png``,
``bench_components.png``.

External server (the GPU suite, ``perf/perf_analyzer/gpu_suite.sh``): ``--url HOST:8001`` runs the
Aisle scenarios against a server started elsewhere (e.g. the Triton container with
``--model-config-name tensorrt``), labelled ``--label``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perf import loadgen  # noqa: E402 - after the sys.path insert above
from perf.perf_analyzer import inputs, runner, stats, variants  # noqa: E402 - after the sys.path insert above

HEADLINE_CONCURRENCY = 16
COMPONENTS = ("tokenizer", "query_encoder", "rerank")
RATE_FRACTIONS = (0.25, 0.5, 0.75, 0.9)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", flush=True)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "gpu": "none",
    }


def ensure_repo(repo: Path) -> None:
    """Build ``repo`` like ``make demo`` does (export + MovieLens index) when it is missing."""
    if (repo / "rerank" / "1" / "index" / "embeddings.npy").is_file():
        return
    from aisle_export.catalog import read_catalog
    from aisle_export.indexing import write_index
    from aisle_export.movielens import fetch_movielens, write_catalog_csv
    from aisle_export.pipeline import export_repository

    say(f"{repo} has no index: exporting and indexing MovieLens-100K (what make demo does)")
    export_repository(repo)
    data = fetch_movielens(repo.parent / "data")
    csv_path = write_catalog_csv(data, data.parent / "movielens_catalog.csv")
    write_index(read_catalog(csv_path), repo, source=csv_path, progress=False)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path = args.out
        self.csv_dir = self.out / "bench_csv"
        self.work: Path = args.work
        self.log = self.work / "perf_analyzer.log"
        self.started = time.monotonic()
        self.results: dict = {
            "machine": machine(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "settings": {
                "concurrency": args.concurrency,
                "measurement_ms": args.measurement_ms,
                "loadgen_s": args.duration,
                "rounds": args.rounds,
                "requests": "MovieLens title searches, K=10",
            },
            "load": [],
            "systems": {},
            "components": {},
            "feed": {},
            "request_rate": [],
            "breakdowns": {},
            "paired": {"rounds": []},
            "notes": [],
        }

    # ------------------------------------------------------------------ helpers
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def over_budget(self) -> bool:
        return self.elapsed() > self.args.budget_s

    def load(self, what: str) -> float:
        one = os.getloadavg()[0]
        self.results["load"].append({"t_s": round(self.elapsed(), 1), "what": what, "load1": one})
        return one

    def system(self, name: str, label: str, kind: str) -> dict:
        return self.results["systems"].setdefault(name, {"label": label, "kind": kind, "points": []})

    def pa(
        self, model: str, data: str, url: str, tag: str, concurrency: int | None = None, rate: float | None = None
    ) -> dict:
        point = f"c{concurrency}" if concurrency is not None else f"r{rate:g}"
        scenario = runner.Scenario(
            model,
            self.paths[data],
            url,
            self.csv_dir / f"{tag}_{point}.csv",
            concurrency=concurrency,
            request_rate=rate,
            measurement_ms=self.args.measurement_ms,
        )
        result = runner.run(scenario, log_path=self.log)
        result["load1"] = self.load(f"{tag} {point}")
        return result

    # ------------------------------------------------------------------ phases
    def prepare(self) -> None:
        runner.check()
        self.out.mkdir(parents=True, exist_ok=True)
        self.csv_dir.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        if self.log.exists():
            self.log.unlink()
        if not self.args.url:
            ensure_repo(self.args.repo)
        say("writing input data from MovieLens")
        self.paths = inputs.write_all(self.args.repo, self.work / "inputs", self.args.data_dir, self.args.requests)
        self.requests = json.loads(self.paths["requests"].read_text())

    def variants(self) -> list[variants.Variant]:
        """The sweep, most informative first (what a tight time budget cuts is the tail)."""
        from aisle_export import repository

        int8 = "int8" in getattr(repository, "CONFIG_VARIANTS", ()) and not self.args.no_int8
        if not int8:
            self.results["notes"].append("INT8 rows skipped: this checkout has no int8 encoder config variant.")
        V = variants.Variant
        order = [
            V("fp32", True, 1),
            V("fp32", False, 1),
            V("int8", True, 1),
            V("int8", True, 2, threads=1),
            V("fp32", True, 2, threads=1),
            V("fp32", True, 2),
            V("int8", False, 1),
            V("int8", True, 2),
            V("fp32", False, 2),
            V("int8", False, 2),
        ]
        chosen = [v for v in order if int8 or v.precision == "fp32"]
        if self.args.variants:
            chosen = [v for v in chosen if v.name in self.args.variants]
        return chosen

    def serve(self, variant: variants.Variant):
        from aisle_server.tritonserver import TritonServer

        repo = self.repos[variant.name]
        return TritonServer(
            repo, model_config_name=variant.model_config_name, log_file=self.work / f"{variant.name}.tritonserver.log"
        )

    def sweep_aisle(self, variant: variants.Variant, default: bool) -> None:
        system = self.system(variant.name, variant.label, "triton")
        with self.serve(variant) as server:
            url = server.grpc_url
            self.pa("recommend", "recommend_search", url, f"{variant.name}_warmup", concurrency=1)
            for c in self.args.concurrency:
                before = stats.snapshot(url)
                t0 = time.monotonic()
                point = self.pa("recommend", "recommend_search", url, variant.name, concurrency=c)
                delta = stats.diff(stats.snapshot(url), before)
                point.update(concurrency=c, breakdown=stats.breakdown(delta, time.monotonic() - t0))
                system["points"].append(point)
                say(f"{variant.name} c={c}: {point['throughput']:.1f}/s p99 {point['p99_ms']:.0f} ms")
            if default and not self.over_budget():
                self.default_extras(url, variant.name)

    def default_extras(self, url: str, system: str) -> None:
        """Component sweeps, the feed mix and a request-rate sweep on the default configuration.

        The offered rates are fractions of ``system``'s peak throughput in its concurrency sweep.
        """
        levels = (1, HEADLINE_CONCURRENCY)
        for model in COMPONENTS:
            self.results["components"][model] = [
                {**self.pa(model, model, url, f"component_{model}", concurrency=c), "concurrency": c} for c in levels
            ]
            say(
                f"component {model}: "
                + ", ".join(f"c={p['concurrency']} {p['throughput']:.0f}/s" for p in self.results["components"][model])
            )
        self.results["feed"] = [
            {**self.pa("recommend", "recommend_feed", url, "recommend_feed", concurrency=c), "concurrency": c}
            for c in levels
        ]
        capacity = max(p["throughput"] for p in self.results["systems"][system]["points"])
        for fraction in RATE_FRACTIONS:
            rate = max(1.0, round(capacity * fraction, 1))
            point = self.pa("recommend", "recommend_search", url, "request_rate", rate=rate)
            self.results["request_rate"].append({**point, "offered_rate": rate, "fraction_of_peak": fraction})
            say(f"request rate {rate:g}/s: p99 {point['p99_ms']:.0f} ms")

    def sweep_loadgen(self, name: str, label: str, make_call) -> None:
        system = self.system(name, label, "loadgen")
        loadgen.run(make_call, self.requests, 1, duration_s=1.0, warmup_s=0.5)
        for c in self.args.concurrency:
            point = loadgen.run(
                make_call, self.requests, c, duration_s=self.args.duration, warmup_s=self.args.warmup
            ).to_dict()
            point["load1"] = self.load(f"{name} c{c}")
            system["points"].append(point)
            say(f"{name} c={c}: {point['throughput']:.1f}/s p99 {point['p99_ms']:.0f} ms")

    def baselines(self) -> None:
        from perf.baselines.search import SearchModel
        from perf.baselines.server import FastApiServer

        say("in-process baseline: sentence-transformers + numpy top-k")
        model = SearchModel(self.args.repo)
        loadgen.run(loadgen.make_inprocess(model.search), self.requests, 2, duration_s=2.0, warmup_s=1.0)
        self.sweep_loadgen(
            "inprocess", "in-process sentence-transformers + numpy", loadgen.make_inprocess(model.search)
        )
        del model
        say("FastAPI baseline")
        with FastApiServer(self.args.repo, log_file=self.work / "fastapi.log") as api:
            self.sweep_loadgen("fastapi", "FastAPI + sentence-transformers", loadgen.make_http(api.url + "/recommend"))

    def ranked_variants(self, chosen: list[variants.Variant]) -> list[variants.Variant]:
        """Variants by their sweep throughput at concurrency 16, best first."""

        def at16(v: variants.Variant) -> float:
            points = self.results["systems"].get(v.name, {}).get("points", [])
            return max((p["throughput"] for p in points if p["concurrency"] == HEADLINE_CONCURRENCY), default=0.0)

        return sorted((v for v in chosen if v.name in self.results["systems"]), key=at16, reverse=True)

    def paired(self, ranked: list[variants.Variant]) -> None:
        """Interleaved rounds at concurrency 16, all servers up at once, so noise hits all alike.

        Servers: FastAPI, the sweep's two best Aisle configurations and FP32 with/without dynamic
        batching (1 instance). The report's "best" is the one with the highest median here; the
        Python load generator drives the sweep's best.
        """
        from contextlib import ExitStack

        from perf.baselines.server import FastApiServer

        c = HEADLINE_CONCURRENCY
        pair = [variants.Variant("fp32", True, 1), variants.Variant("fp32", False, 1)]
        best = ranked[0]
        aisle = {v.name: v for v in [*ranked[:2], *pair] if v.name in self.repos}
        self.results["paired"].update(
            python_loadgen_target=best.name,
            python_loadgen_label=best.label,
            concurrency=c,
            labels={n: v.label for n, v in aisle.items()},
        )
        with ExitStack() as stack:
            api = stack.enter_context(FastApiServer(self.args.repo, log_file=self.work / "fastapi.log"))
            urls = {name: stack.enter_context(self.serve(v)).grpc_url for name, v in aisle.items()}
            http = loadgen.make_http(api.url + "/recommend")
            loadgen.run(http, self.requests, 1, duration_s=1.0, warmup_s=0.5)
            for name, url in urls.items():
                self.pa("recommend", "recommend_search", url, f"paired_{name}_warmup", concurrency=1)
            for r in range(self.args.rounds):
                row = {"round": r + 1}
                fast = loadgen.run(http, self.requests, c, duration_s=self.args.duration, warmup_s=self.args.warmup)
                row["fastapi"] = {**fast.to_dict(), "load1": self.load(f"paired r{r + 1} fastapi")}
                for name, url in urls.items():
                    before = stats.snapshot(url)
                    t0 = time.monotonic()
                    row[name] = self.pa("recommend", "recommend_search", url, f"paired_r{r + 1}_{name}", concurrency=c)
                    row[name]["breakdown"] = stats.breakdown(
                        stats.diff(stats.snapshot(url), before), time.monotonic() - t0
                    )
                py = loadgen.run(
                    loadgen.make_triton(urls[best.name]),
                    self.requests,
                    c,
                    duration_s=self.args.duration,
                    warmup_s=self.args.warmup,
                )
                row["best_python_loadgen"] = {**py.to_dict(), "load1": self.load(f"paired r{r + 1} best via loadgen")}
                self.results["paired"]["rounds"].append(row)
                say(
                    f"paired round {r + 1}: FastAPI {fast.throughput:.1f}/s p99 {fast.p99_ms:.0f} ms; "
                    + "; ".join(f"{n} {row[n]['throughput']:.1f}/s p99 {row[n]['p99_ms']:.0f} ms" for n in urls)
                    + f"; best via Python loadgen {py.throughput:.1f}/s p99 {py.p99_ms:.0f} ms"
                )

    def external(self) -> None:
        """The Aisle scenarios against a server someone else started (the GPU suite)."""
        name, url = self.args.label, self.args.url
        system = self.system(name, name, "triton")
        self.pa("recommend", "recommend_search", url, f"{name}_warmup", concurrency=1)
        for c in self.args.concurrency:
            before = stats.snapshot(url)
            t0 = time.monotonic()
            point = self.pa("recommend", "recommend_search", url, name, concurrency=c)
            point.update(
                concurrency=c, breakdown=stats.breakdown(stats.diff(stats.snapshot(url), before), time.monotonic() - t0)
            )
            system["points"].append(point)
            say(f"{name} c={c}: {point['throughput']:.1f}/s p99 {point['p99_ms']:.0f} ms")
        self.default_extras(url, name)

    def run(self) -> dict:
        self.prepare()
        self.load("start")
        if self.args.url:
            self.external()
        else:
            chosen = self.variants()
            self.repos = {}
            for variant in chosen:
                say(f"building {variant.name}")
                self.repos[variant.name] = variants.build_variant(self.args.repo, variant, self.work / "repos")
            for variant in chosen:
                # keep the last ~5 minutes of the budget for the baselines and the paired rounds
                if variant.name != "aisle-fp32-db-1i" and self.elapsed() > self.args.budget_s - 300:
                    self.results["notes"].append(f"{variant.name} skipped: past the time budget")
                    continue
                say(f"sweeping {variant.label}")
                self.sweep_aisle(variant, default=variant.name == "aisle-fp32-db-1i")
            if not self.args.skip_baselines:
                self.baselines()
                if self.args.rounds:
                    self.paired(self.ranked_variants(chosen))
        self.load("end")
        self.results["duration_s"] = round(self.elapsed(), 1)
        return self.results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Aisle side-by-side benchmarks (make bench)")
    p.add_argument("--repo", type=Path, default=ROOT / "build" / "model_repository")
    p.add_argument("--data-dir", type=Path, default=ROOT / "build" / "data")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "bench")
    p.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 32])
    p.add_argument("--measurement-ms", type=int, default=1500, help="perf_analyzer window (3 windows a point)")
    p.add_argument("--duration", type=float, default=4.0, help="load generator seconds a point")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3, help="paired rounds at concurrency 16 (0: none)")
    p.add_argument("--requests", type=int, default=512, help="distinct requests in the mix")
    p.add_argument("--variants", nargs="*", help="only these Aisle variants (names as in the report)")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--budget-s", type=float, default=17 * 60, help="skip what is left past this")
    p.add_argument("--url", help="run the Aisle scenarios against this already running server (GPU suite)")
    p.add_argument("--label", default="aisle-external", help="system name for --url")
    p.add_argument("--no-report", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = Bench(args).run()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench" if not args.url else f"bench_{args.label}"
    (args.out / f"{stem}_results.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_report:
        from perf import report

        for path in report.write(results, args.out, stem):
            say(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
