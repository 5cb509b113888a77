"""What every benchmark report records about its run (the command as typed and the machine), and
how it is written (JSON, Markdown, PNG side by side).

Shared by the perf/ scripts so that each report says the same things the same way: the figures
are ratios on a shared machine, and the load average before and after says how shared it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "perf" / "results"


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command as typed from the repository root, ``python -m <module> <argv>``, for the report."""
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else str(python)
    return shlex.join([shown, "-m", module, *argv])


def machine(load_before: Sequence[float]) -> dict[str, object]:
    """Cores, platform, Python and the load average (1/5/15 min) before the run and now."""
    return {
        "cpus": os.cpu_count(),
        "platform": f"{platform.machine()} {platform.system()}",
        "python": platform.python_version(),
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
    }


def machine_details() -> dict[str, object]:
    """The CPU model, cores, kernel and Python (``make bench``'s report heads with them)."""
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


def stamp() -> str:
    """``HH:MM:SS load L``: the time and the 1-minute load average, to prefix a progress line."""
    return f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}"


def write_report(
    out: Path,
    name: str,
    report: dict,
    render_markdown: Callable[[dict], str],
    plot: Callable[[dict, Path], object],
) -> str:
    """``<out>/<name>.json``, ``.md`` and ``.png`` of ``report``; prints and returns the Markdown.
    ``out`` is made if missing: a long run must not end without its results over a folder."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (out / f"{name}.md").write_text(markdown)
    plot(report, out / f"{name}.png")
    print(markdown)
    return markdown


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """A report's matplotlib figure laid out, written to ``path`` as PNG and closed (pyplot keeps
    every open figure alive); ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def benchmark_parser(package: str, doc: str) -> argparse.ArgumentParser:
    """The options of ``python -m perf.<package>``, described by its docstring's first line; ``--out``
    (where the report goes) is every benchmark's."""
    parser = argparse.ArgumentParser(prog=f"python -m perf.{package}", description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def run_benchmark(
    package: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[argparse.Namespace, str], dict],
    render_markdown: Callable[[dict], str],
    plot: Callable[[dict, Path], object],
) -> dict:
    """Parse ``argv`` (default: the command line), ``run(args, command)`` the scenario, and write
    ``<out>/<package>.{json,md,png}``; a ``--rounds`` below 1 is refused before anything runs."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if getattr(args, "rounds", 1) < 1:
        raise SystemExit("error: --rounds must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args, command_line(f"perf.{package}", argv))
    write_report(args.out, package, result, render_markdown, plot)
    return result
