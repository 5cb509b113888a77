"""The served encoder stubs run at the niceness their config asks for; the short stages do not."""

from __future__ import annotations

import os
from pathlib import Path

from aisle_export.build.repository import ENCODER_NICE
from aisle_server.processes import process_group_members
from perf.lib.procstats import process_name


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
    for pid in process_group_members(server.pid):  # tritonserver and its stubs, named by their model
        niceness.setdefault(process_name(pid, server.pid), set()).update(_thread_niceness(pid))
    base = os.getpriority(os.PRIO_PROCESS, server.pid)  # the stubs start at tritonserver's niceness
    lowered = min(base + ENCODER_NICE, 19)
    assert niceness["query_encoder"] == {lowered} and niceness["item_encoder"] == {lowered}, niceness
    assert niceness["tokenizer"] == {base} and niceness["rerank"] == {base}, niceness
