"""File utilities every stage shares: content checksums and atomic directory replacement."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def replace_directory(final: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` fill a hidden sibling of ``final``, then swap it into place by renames.

    A model (re)loading meanwhile reads the old directory or the new one, never half of either.
    """
    staging, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")
    for path in (staging, old):
        shutil.rmtree(path, ignore_errors=True)
    write(staging)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
