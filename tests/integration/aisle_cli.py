"""The ``aisle`` command run in the test's own process: the same ``main`` the console script calls.

A subprocess per call costs seconds of imports (torch, onnxruntime) and shows nothing the tests
here check; tests that *are* about the process boundary (install, signals, environment) keep
running the command as a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

from aisle_export.cli import main


@dataclass(frozen=True)
class Done:
    """What one ``aisle`` call did: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    def last_json(self) -> dict:
        """The JSON object on the last line of stdout (the commands that report one)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run(*args: str) -> Done:
    """``aisle ARGS``: exit code, stdout and stderr, as a subprocess would give them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Done(code, out.getvalue(), err.getvalue())


def ok(*args: str) -> Done:
    """``aisle ARGS``, which must succeed."""
    done = run(*args)
    assert done.returncode == 0, f"aisle {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done
