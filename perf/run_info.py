"""What every benchmark report records about its run (the command as typed and the machine), and
how it is written (JSON, Markdown, PNG side by side).

Shared by the perf/ scripts so that each report says the same things the same way: the figures
are ratios on a shared machine, and the load average before and after says how shared it was.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command as typed from the repository root (``script`` relative to it), for the report."""
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else str(python)
    return shlex.join([shown, script, *argv])


def machine(load_before: Sequence[float]) -> dict[str, object]:
    """Cores, platform, Python and the load average (1/5/15 min) before the run and now."""
    return {
        "cpus": os.cpu_count(),
        "platform": f"{platform.machine()} {platform.system()}",
        "python": platform.python_version(),
        "load_before": list(load_before),
        "load_after": list(os.getloadavg()),
    }


def write_report(
    out: Path,
    name: str,
    report: dict,
    render_markdown: Callable[[dict], str],
    plot: Callable[[dict, Path], object],
) -> str:
    """``<out>/<name>.json``, ``.md`` and ``.png`` of ``report``; prints and returns the Markdown."""
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (out / f"{name}.md").write_text(markdown)
    plot(report, out / f"{name}.png")
    print(markdown)
    return markdown
