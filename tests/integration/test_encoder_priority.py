"""The served encoder stubs run at the niceness their config asks for; the short stages do not."""

from __future__ import annotations

import os
from pathlib import Path

from aisle_export.build.repository import ENCODER_NICE
from aisle_server.processes import process_group_members


def _stub_model(pid: int) -> str | None:
    """The model a Python-backend stub serves (its first argument is the model's path), else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not argv or not argv[0].endswith(b"triton_python_backend_stub") or len(argv) < 2:
        return None
    return Path(argv[1].decode()).parent.parent.name  # <repo>/<model>/<version>/model.py


def _thread_niceness(pid: int) -> set[int]:
    """The niceness of each thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            values.add(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError):
            continue  # the thread ended while we looked
    return values


def test_encoder_stubs_run_niced_and_the_short_stages_do_not(server, client):
    assert len(client.recommend(query="star wars", k=3)) == 3  # every stage has run at least once
    niceness: dict[str, set[int]] = {}
    for pid in process_group_members(server.pid):
        model = _stub_model(pid)
        if model is not None:
            niceness.setdefault(model, set()).update(_thread_niceness(pid))
    base = os.getpriority(os.PRIO_PROCESS, server.pid)  # the stubs start at tritonserver's niceness
    lowered = min(base + ENCODER_NICE, 19)
    assert niceness["query_encoder"] == {lowered} and niceness["item_encoder"] == {lowered}, niceness
    assert niceness["tokenizer"] == {base} and niceness["rerank"] == {base}, niceness
