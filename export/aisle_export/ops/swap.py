"""Catalog hot swap and rollback through Triton's model control API (``aisle catalog ...``).

The catalog index lives in the ``rerank`` model's version directories (``rerank/<v>/index``).
``aisle index --version next`` writes a new one; on a server started with
``--model-control-mode=explicit`` (``aisle serve --model-control explicit``), ``load`` asks Triton to
reload ``rerank``: with the default version policy (latest 1) it loads the newest version, sends
new requests to it once it is ready, lets in-flight requests finish on the old one, then unloads
the old one — no restart, no failed request. A request never mixes versions: ``rerank`` is a
single ensemble step. ``rollback`` retires the newest version directory (renamed to
``.<v>.retired-<time>``, which Triton ignores) and reloads, so the previous version serves again.

The model control API can also load models from files sent in the request: on a server that
allows it, restrict it (``--grpc-restricted-protocol=model-repository:KEY=VALUE``, see the
README's Reliability section) and pass the header with ``--header``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from aisle_server.index import rerank_versions as version_dirs

MODEL = "rerank"


def _client(url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url)


def served_versions(url: str, headers: Mapping[str, str] | None = None) -> dict[int, str]:
    """``{version: state}`` of ``rerank`` on the server (READY, UNLOADING, ...)."""
    client = _client(url)
    try:
        index = client.get_model_repository_index(headers=dict(headers or {}), as_json=True)
    finally:
        client.close()
    return {
        int(m["version"]): m.get("state", "")
        for m in index.get("models", [])
        if m.get("name") == MODEL and m.get("version")
    }


def load(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 120.0) -> list[int]:
    """Reload ``rerank`` (Triton serves the newest version directory); the READY versions after it."""
    client = _client(url)
    try:
        client.load_model(MODEL, headers=dict(headers or {}), client_timeout=timeout_s)
    finally:
        client.close()
    return sorted(v for v, state in served_versions(url, headers).items() if state == "READY")


def retire(repo: Path, keep_up_to: int | None = None) -> list[int]:
    """Rename the version directories above ``keep_up_to`` (default: the newest one) out of Triton's sight."""
    versions = version_dirs(repo)
    if len(versions) < 2 and keep_up_to is None:
        raise ValueError(f"{Path(repo) / MODEL} has {len(versions)} version(s); nothing to roll back to")
    keep = versions[-2] if keep_up_to is None else keep_up_to
    if keep not in versions:
        raise ValueError(f"version {keep} does not exist under {Path(repo) / MODEL} (have {versions})")
    retired = [v for v in versions if v > keep]
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for v in retired:
        (Path(repo) / MODEL / str(v)).rename(Path(repo) / MODEL / f".{v}.retired-{stamp}")
    return retired


def rollback(
    repo: Path,
    url: str,
    headers: Mapping[str, str] | None = None,
    keep_up_to: int | None = None,
    timeout_s: float = 120.0,
) -> tuple[list[int], list[int]]:
    """Retire the newest version(s) and reload; (retired versions, READY versions after)."""
    retired = retire(repo, keep_up_to)
    return retired, load(url, headers, timeout_s)
