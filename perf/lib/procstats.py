"""Process memory and Python-backend shared memory of a running tritonserver, from /proc (Linux only).

Shared by ``perf.soak``, ``perf.fuzz``, ``perf.bench_oversized_query``, ``perf.bench_index_scale`` and
the reliability tests. Other tritonservers may run on the same machine, so shared-memory regions are
attributed to *our* server by the processes that map them (tritonserver and its
``triton_python_backend_stub`` children), never by counting ``/dev/shm`` as a whole.

Two views of "the server": :func:`tree_rss` follows tritonserver's children; the ``group_*``
functions and :class:`RssSampler` take its process group (``TritonServer`` starts it as a group
leader), per process name with :func:`group_memory` and :func:`group_cpu_seconds`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Self

from aisle_server.processes import process_group_members

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
MB = 1 << 20


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the Python-backend stubs of a tritonserver)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return sorted(set(found))


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def status_mib(
    pid: int | str = "self", keys: tuple[str, ...] = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
) -> dict[str, float]:
    """``keys`` of ``/proc/<pid>/status`` (VmHWM: peak resident; RssAnon: heap; RssFile: mapped
    file pages), in MiB, in the file's order."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def tree_rss(pid: int) -> dict[str, int]:
    """RSS of tritonserver, of all its stubs, and their sum, in bytes."""
    server = rss_bytes(pid)
    stubs = sum(rss_bytes(child) for child in children(pid))
    return {"server": server, "stubs": stubs, "total": server + stubs}


def mapped_shm_regions(pid: int) -> set[str]:
    """Names of the Python-backend shared-memory regions mapped by ``pid`` or its descendants."""
    names: set[str] = set()
    for proc in [pid, *children(pid)]:
        try:
            maps = Path(f"/proc/{proc}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.rsplit(" ", 1)[-1]
            if path.startswith(str(SHM_DIR / SHM_PREFIX)):
                names.add(Path(path.replace(" (deleted)", "")).name)
    return names


def shm_regions() -> set[str]:
    """Every Python-backend region in /dev/shm right now (any server on the machine)."""
    try:
        return {name for name in os.listdir(SHM_DIR) if name.startswith(SHM_PREFIX)}
    except OSError:
        return set()


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(IPv4/IPv6 address, port) of every listening TCP socket ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            found.append((_address(hex_addr, width), int(hex_port, 16)))
    return found


def _address(hex_addr: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    # /proc/net stores each 32-bit word in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)) if width == 8 or len(words) == 16 else hex_addr


def slope_per_minute(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` against time, per minute (0.0 with fewer than 2 points)."""
    n = len(times_s)
    if n < 2:
        return 0.0
    mean_t = sum(times_s) / n
    mean_v = sum(values) / n
    var = sum((t - mean_t) ** 2 for t in times_s)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values))
    return cov / var * 60.0


def group_rss_mb(pid: int) -> float:
    """VmRSS of tritonserver's process group (the server and its Python-backend stubs), in MB."""
    return sum(rss_bytes(member) for member in process_group_members(pid)) / MB


def process_name(pid: int, leader: int) -> str:
    """``tritonserver``, or the model a Python-backend stub serves (its ``<repo>/<model>/<v>/model.py``)."""
    if pid == leader:
        return "tritonserver"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    script = next((a.decode(errors="replace") for a in args if a.endswith(b"model.py")), "")
    return Path(script).parent.parent.name if script else "?"


def group_memory(pid: int) -> dict[str, dict[str, float]]:
    """Memory of tritonserver's process group per process name (a model's instances summed), MB:
    ``rss`` (VmRSS), ``pss`` (shared pages split between the processes mapping them, so the sum over
    the group counts the Python backend's shared memory once, where summed RSS counts it in
    tritonserver *and* the stub), ``anon`` and ``shmem`` (the PSS parts)."""
    fields = {"Rss:": "rss", "Pss:": "pss", "Pss_Anon:": "anon", "Pss_Shmem:": "shmem"}
    out: dict[str, dict[str, float]] = {}
    for member in process_group_members(pid):
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # exited while we read
        entry = out.setdefault(process_name(member, pid), dict.fromkeys(fields.values(), 0.0))
        for line in lines:
            parts = line.split()
            if parts and parts[0] in fields:
                entry[fields[parts[0]]] += int(parts[1]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far, in seconds (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def group_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds used so far per process name of tritonserver's process group (:func:`process_name`:
    ``tritonserver`` or the model a stub serves, a model's instances summed). Two readings around a
    window give each Python-backend stub's real CPU time beside Triton's wall-clock "busy" figures,
    which also count the time a stub waits for the CPU."""
    out: dict[str, float] = {}
    for member in process_group_members(pid):
        name = process_name(member, pid)
        out[name] = out.get(name, 0.0) + cpu_seconds(member)
    return out


class RssSampler:
    """Samples ``group_rss_mb(pid)`` every ``interval_s`` in a background thread."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        self.pid, self.interval_s, self.t0 = pid, interval_s, time.perf_counter()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, group_rss_mb(self.pid)))
            self._stop.wait(self.interval_s)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def peak_since(self, t: float) -> float:
        return max((mb for s, mb in self.samples if s >= t), default=float("nan"))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
