"""Follow one ``aisle`` command through the toolchain's modules: which module calls into which.

A reader following a catalog through ``aisle index`` or a log through ``aisle finetune`` should move
down the stages, entering each module from one place (or two), not bounce back into a helper bundle
from everywhere. This runs the command in-process under a profiler and records every distinct call
from a function of one toolchain module into a module-level function of another (a loop's repeats
count once; methods called on objects a stage hands down — ``split.users``, ``len(catalog)`` —
are reading data, not entering a stage, and are listed apart). It prints the walk in the order the
calls were first made and, for each module, the modules that entered it.

    .venv/bin/python -m perf.module_walk index --catalog C.csv --repo REPO --version next
    .venv/bin/python -m perf.module_walk finetune --interactions I.csv --catalog C.csv --out DIR …

Everything after the module name is the ``aisle`` command line. ``--json PATH`` (first) also
writes the walk as JSON.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
from collections import defaultdict
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import aisle_export

PACKAGE_DIR = str(Path(aisle_export.__file__).resolve().parent) + "/"


def module_of(code: CodeType) -> str | None:
    """``data.catalog`` for a function of ``aisle_export/data/catalog.py``; None outside the toolchain."""
    if not code.co_filename.startswith(PACKAGE_DIR):
        return None
    name = code.co_filename[len(PACKAGE_DIR) : -len(".py")].replace("/", ".")
    return name.removesuffix(".__init__")


class Walk:
    """Distinct (caller module, caller function, callee module, callee function) calls, in first-seen order."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str, str, str], None] = {}

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if not code.co_flags & inspect.CO_OPTIMIZED or code.co_name.startswith("<"):
            return  # module and class bodies, comprehensions, lambdas
        callee = module_of(code)
        if callee is None:
            return
        back = frame.f_back
        while back is not None and (module_of(back.f_code) is None or back.f_code.co_name.startswith("<")):
            back = back.f_back  # through library frames (tqdm, numpy) and comprehensions to the caller
        if back is None:
            return
        caller = module_of(back.f_code)
        if caller is None or caller == callee or callee.startswith("cli"):
            return
        self.calls.setdefault((caller, back.f_code.co_qualname, callee, code.co_qualname), None)

    def entries(self) -> dict[str, list[str]]:
        """Module → the other modules that called its module-level functions."""
        entered: dict[str, set[str]] = defaultdict(set)
        for caller, _, callee, function in self.calls:
            if "." not in function:
                entered[callee].add(caller)
        return {module: sorted(callers) for module, callers in entered.items()}


def main(argv: list[str]) -> int:
    out = None
    if argv[:1] == ["--json"]:
        out, argv = Path(argv[1]), argv[2:]
    from aisle_export.cli import main as aisle

    walk = Walk()
    sys.setprofile(walk.profile)
    threading.setprofile(walk.profile)
    try:
        code = aisle(argv)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    print(f"\nthe walk of `aisle {' '.join(argv[:1])}` (caller → callee, first call first):")
    for caller, caller_function, callee, function in walk.calls:
        kind = "  (a method: reading data)" if "." in function else ""
        print(f"  {caller}.{caller_function} → {callee}.{function}{kind}")
    entries = walk.entries()
    print("\nmodules entered, and from where:")
    for module, callers in sorted(entries.items(), key=lambda item: (-len(item[1]), item[0])):
        print(f"  {module:24s} {len(callers)}  from {', '.join(callers)}")
    if out is not None:
        out.write_text(json.dumps({"command": argv, "calls": list(walk.calls), "entries": entries}, indent=1))
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
