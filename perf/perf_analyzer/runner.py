"""Run Triton's ``perf_analyzer`` (C++ load generator) and read its CSV.

The binary comes with the ``tritonclient==2.50.0`` manylinux wheel (pip puts it in ``.venv/bin``).
It links ``libb64.so.0d`` (Debian: ``apt-get install libb64-0d``; ``make system-deps``) and
``libcudart.so.12`` even without a GPU — the ``nvidia-cuda-runtime-cu12`` wheel (``bench`` extra)
ships it, and :func:`environment` puts its directory on ``LD_LIBRARY_PATH``.

Every scenario: gRPC to 127.0.0.1, batch size 1, ``--input-data`` from real demo data
(:mod:`.inputs`), fixed time windows with a loose stability check (a shared 2-core machine never
gives three windows within 10 %), ``-f`` CSV with p50/p90/p95/p99.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

MEASUREMENT_MS = 2000
STABILITY_PCT = 999
MAX_TRIALS = 4


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, cannot load its libraries, or failed."""


def binary() -> Path:
    """``perf_analyzer`` next to this Python, in tritonclient's package, or on PATH."""
    candidates = [
        Path(sys.executable).parent / "perf_analyzer",
        Path(sysconfig.get_paths()["scripts"]) / "perf_analyzer",
        Path(sysconfig.get_paths()["purelib"]) / "tritonclient" / "bin" / "perf_analyzer",
    ]
    found = shutil.which("perf_analyzer")
    candidates += [Path(found)] if found else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PerfAnalyzerError("perf_analyzer not found: pip install 'tritonclient[grpc]==2.50.0'")


def cudart_dir() -> Path | None:
    """The ``nvidia-cuda-runtime-cu12`` wheel's lib directory (holds ``libcudart.so.12``)."""
    try:
        import nvidia.cuda_runtime
    except ImportError:
        return None
    for base in nvidia.cuda_runtime.__path__:
        lib = Path(base) / "lib"
        if (lib / "libcudart.so.12").exists():
            return lib
    return None


def environment() -> dict[str, str]:
    env = dict(os.environ)
    lib = cudart_dir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p)
    return env


def check() -> str:
    """``perf_analyzer --version`` output; raises with the missing library named when it cannot start."""
    result = subprocess.run([str(binary()), "--version"], env=environment(), capture_output=True, text=True)
    text = (result.stdout + result.stderr).strip()
    if "error while loading shared libraries" in text:
        hint = (
            "apt-get install libb64-0d"
            if "libb64" in text
            else "pip install nvidia-cuda-runtime-cu12 (the bench extra)"
        )
        raise PerfAnalyzerError(f"{text} — {hint}")
    return text


@dataclass
class Scenario:
    """One perf_analyzer invocation."""

    model: str
    input_data: Path
    url: str
    csv_path: Path
    concurrency: int | None = None
    request_rate: float | None = None
    measurement_ms: int = MEASUREMENT_MS
    stability_pct: int = STABILITY_PCT
    max_trials: int = MAX_TRIALS
    extra: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("a scenario has either a concurrency or a request rate")
        cmd = [
            str(binary()),
            "-m",
            self.model,
            "-u",
            self.url,
            "-i",
            "grpc",
            "-b",
            "1",
            "--input-data",
            str(self.input_data),
            "--measurement-interval",
            str(self.measurement_ms),
            "--stability-percentage",
            str(self.stability_pct),
            "--max-trials",
            str(self.max_trials),
            "-f",
            str(self.csv_path),
        ]
        if self.concurrency is not None:
            cmd += ["--concurrency-range", f"{self.concurrency}:{self.concurrency}"]
        else:
            # Poisson arrivals: the open-loop view a latency SLO is about
            cmd += [
                "--request-rate-range",
                f"{self.request_rate:g}:{self.request_rate:g}",
                "--request-distribution",
                "poisson",
            ]
        return cmd + list(self.extra)


def read_csv(path: Path) -> list[dict[str, float]]:
    """perf_analyzer's ``-f`` CSV rows as floats (latencies in microseconds, as it writes them)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({key.strip(): float(value) for key, value in row.items() if key and value not in (None, "")})
    return rows


#: the columns whose sum is the mean client-side latency (perf_analyzer 2.50 writes no "Avg latency")
_LATENCY_PARTS = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)


def summarize(row: dict[str, float]) -> dict[str, float]:
    """The figures the report uses, latencies in ms."""
    return {
        "throughput": row["Inferences/Second"],
        "p50_ms": row["p50 latency"] / 1000,
        "p95_ms": row["p95 latency"] / 1000,
        "p99_ms": row["p99 latency"] / 1000,
        "mean_ms": sum(row.get(c, 0.0) for c in _LATENCY_PARTS) / 1000,
    }


def run(scenario: Scenario, timeout_s: float = 120.0, log_path: Path | None = None) -> dict[str, float]:
    """Run one scenario; returns :func:`summarize` of its CSV row. Raises with perf_analyzer's output."""
    scenario.csv_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            scenario.command(), env=environment(), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s:.0f}s: {' '.join(scenario.command())}") from exc
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write("$ " + " ".join(scenario.command()) + "\n" + result.stdout + result.stderr + "\n")
    if result.returncode != 0 or not scenario.csv_path.is_file():
        raise PerfAnalyzerError(f"perf_analyzer exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    rows = read_csv(scenario.csv_path)
    if not rows:
        raise PerfAnalyzerError(f"perf_analyzer wrote no rows to {scenario.csv_path}")
    return summarize(rows[-1])
