"""How ``aisle finetune`` grows with the log: wall time and peak memory at 100k and 1M events.

A synthetic store (:mod:`perf.synthetic_log`: a 100,000-item catalog of short product texts; Zipf
popularity; shoppers with a repertoire they buy again) at each log size, and the *whole* ``aisle
finetune`` on it — towers, user encoders, log signals, knob search and stack choice, as a store
would run it — each in a fresh subprocess. Its resident memory is sampled with its children's
every half second (``perf.lib.procstats``); the figure is the peak of that sum. The log files
are written once per size and reused.

``--before REF`` also runs the code of a git ref (default ``main``) on the ``--before-events``
logs, from a copy of its sources, so the two stand side by side in one run on one machine;
``--before-timeout`` stops a run that would not finish (its memory up to then is still reported).
On a machine shared with other jobs the times are noisy: compare within one run.

    python -m perf.bench_finetune_scale                      # 100k and 1M events, 100k items
    python -m perf.bench_finetune_scale --before main --before-items 20000 --before-events 100000
    python -m perf.bench_finetune_scale --quick              # a few minutes: small store, short training

Writes ``perf/results/bench_finetune_scale.{md,json,png}`` (``--quick``: ``…_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from perf.lib.procstats import MB, children, rss_bytes
from perf.lib.run_info import RESULTS, ROOT, command_line, machine
from perf.synthetic_log import write_store

LIMIT_GB = 4.0  # the bound, read strictly: 4 × 10⁹ bytes (3,815 MiB), not 4 GiB


def gb(mib: float) -> float:
    """Decimal gigabytes (10⁹ bytes) of ``mib`` mebibytes: the unit of :data:`LIMIT_GB` and the reports."""
    return mib * MB / 1e9


PACKAGES = ("export", "server", "client", "contract")


@dataclass
class Case:
    code: str  # "this tree" or the git ref
    items: int
    events: int
    users: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    finished: bool = False
    returncode: int | None = None
    stages: dict = field(default_factory=dict)
    log: str = ""


class TreeSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled every ``period`` s."""

    def __init__(self, pid: int, period: float = 0.5):
        self.pid, self.period, self.peak = pid, period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(rss_bytes(p) for p in [self.pid, *children(self.pid)])
            self.peak = max(self.peak, total)
            self._stop.wait(self.period)


def source_tree(ref: str, workdir: Path) -> Path:
    """The packages of git ``ref`` unpacked under ``workdir`` (re-used when already there)."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True)
    out = workdir / f"code-{commit.stdout.strip()[:12]}"
    if not (out / "export").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = out / "src.tar"
        subprocess.run(["git", "archive", "-o", str(archive), ref, *PACKAGES], cwd=ROOT, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(out, filter="data")
        archive.unlink()
    return out


def run_finetune(case: Case, store: Path, code: Path, out: Path, extra: list[str], timeout: float) -> Case:
    """The whole ``aisle finetune`` on ``store``'s files with the packages under ``code``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(code / p) for p in PACKAGES),
        "TOKENIZERS_PARALLELISM": "false",
    }
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "finetune.log"
    argv = [
        sys.executable, "-m", "aisle_export.cli", "finetune",
        "--interactions", str(store / "interactions.csv"), "--catalog", str(store / "catalog.csv"),
        "--out", str(out / "finetuned"), *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        with TreeSampler(process.pid) as sampler:
            try:
                case.returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()  # the one process we started; it leaves no children of its own
                process.wait()
    case.wall_s = round(time.perf_counter() - started, 1)
    case.peak_rss_mb = round(sampler.peak / MB, 1)
    case.finished = case.returncode == 0
    case.log = str(log_path)
    report = out / "finetuned" / "finetune_report.json"
    if case.finished and report.exists():
        case.stages = stages(json.loads(report.read_text()))
    elif case.returncode not in (0, None):
        raise RuntimeError(f"aisle finetune failed ({case.returncode}); see {log_path}")
    return case


def stages(report: dict) -> dict:
    """Where the time went, from ``finetune_report.json``."""
    towers, encoder, valid = report.get("towers", {}), report.get("user_encoder", {}), report["validation_user_encoder"]
    return {
        "total_s": report.get("total_seconds"),
        "towers_cache_s": towers.get("cache_seconds"),
        "towers_train_s": towers.get("train_seconds"),
        "towers_cache_mb": towers.get("cache_mb"),
        "tower_examples": towers.get("examples"),
        "user_encoder_s": encoder.get("total_seconds"),
        "validation_user_encoder_s": valid.get("total_seconds"),
        "user_encoder_windows": encoder.get("windows"),
        "user_encoder_softmax": encoder.get("softmax", "full catalog"),
        "served": report.get("served"),
    }


def render(result: dict) -> str:
    rows = result["cases"]
    lines = [
        "## `aisle finetune` against the log's length",
        "",
        f"Synthetic store (`perf.synthetic_log`): {rows[0]['items']:,}-item catalog of short texts unless "
        "stated, Zipf popularity, shoppers who buy again; the whole `aisle finetune` (towers, two user "
        "encoders, log signals, knob search, stack choice) in a fresh process per row. Peak RSS: the "
        "process and its children, sampled every 0.5 s.",
        "",
        "| code | catalog items | events | wall time | peak RSS | done |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        done = "yes" if r["finished"] else f"stopped at {r['wall_s']:.0f} s"
        lines.append(
            f"| {r['code']} | {r['items']:,} | {r['events']:,} | {r['wall_s']:.0f} s | "
            f"{gb(r['peak_rss_mb']):.2f} GB | {done} |"
        )
    lines += ["", "Where the time went (this tree, seconds):", ""]
    keys = ["towers_cache_s", "towers_train_s", "validation_user_encoder_s", "user_encoder_s", "total_s"]
    lines += ["| events | " + " | ".join(keys) + " | tower cache MB | encoder softmax |"]
    lines += ["| ---: |" + " ---: |" * (len(keys) + 1) + " --- |"]
    for r in rows:
        if r["stages"] and r["code"] == "this tree":
            s = r["stages"]
            lines.append(
                f"| {r['events']:,} | "
                + " | ".join(str(s.get(k)) for k in keys)
                + f" | {s.get('towers_cache_mb')} | {s.get('user_encoder_softmax')} |"
            )
    checks = result.get("checks", {})
    if checks:
        lines += ["", "Checks: " + json.dumps(checks)]
    lines += ["", f"Command: `{result['command']}`", "", f"Machine: {json.dumps(result['machine'])}", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in result["cases"]:
        groups.setdefault((r["code"], r["items"]), []).append(r)
    for (code, items), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["events"])
        label = f"{code}, {items:,} items"
        x = [r["events"] for r in rows]
        for ax, key, scale in ((axes[0], "wall_s", 1 / 60), (axes[1], "peak_rss_mb", gb(1.0))):
            ax.plot(x, [r[key] * scale for r in rows], marker="o", label=label)
            for r in rows:
                if not r["finished"]:
                    ax.annotate("stopped", (r["events"], r[key] * scale), fontsize=7)
    axes[0].set_ylabel("wall time (min)")
    axes[1].set_ylabel("peak RSS (GB, 10⁹ bytes)")
    axes[1].axhline(LIMIT_GB, color="grey", ls="--", lw=1)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("events in the log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("aisle finetune: whole run, synthetic store", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def checks(cases: list[Case]) -> dict:
    """Peak RSS at the longest log, and the time ratio against the events ratio (this tree)."""
    ours = sorted((c for c in cases if c.code == "this tree" and c.finished), key=lambda c: c.events)
    if len(ours) < 2:
        return {}
    small, large = ours[0], ours[-1]
    return {
        f"peak_rss_gb_at_{large.events}": round(gb(large.peak_rss_mb), 2),
        "peak_rss_within_4gb": gb(large.peak_rss_mb) <= LIMIT_GB,
        "events_ratio": round(large.events / small.events, 2),
        "time_ratio": round(large.wall_s / small.wall_s, 2),
        "time_grows_no_faster_than_events": large.wall_s / small.wall_s <= large.events / small.events,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--events", type=int, nargs="*", help="log sizes for this tree (default 100000 1000000)")
    p.add_argument("--before", metavar="REF", help="also run the code of this git ref (e.g. main)")
    p.add_argument("--before-items", type=int, help="catalog size for the --before runs (default --items)")
    p.add_argument("--before-events", type=int, nargs="+", help="log sizes for --before (default 100000)")
    p.add_argument("--before-timeout", type=float, default=3600.0, help="stop a --before run after this many s")
    p.add_argument("--quick", action="store_true", help="a quick check: 5k items, 10k and 30k events, short training")
    p.add_argument(
        "--short-training",
        action="store_true",
        help="--quick's short training (few tower steps, two encoder epochs, a small knob grid) at the sizes given: "
        "how time and memory grow with the log does not depend on how long each size trains",
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/aisle-finetune-scale"))
    p.add_argument("--name", default="bench_finetune_scale")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    extra: list[str] = []
    defaults = ([100_000, 1_000_000], [100_000])
    if args.quick:
        args.items, args.name, defaults = 5_000, f"{args.name}_quick", ([10_000, 30_000], [10_000])
    if args.quick or args.short_training:
        extra = [
            "--steps",
            "4",
            "--encoder-epochs",
            "2",
            "--popularity-weights",
            "0,1",
            "--cooccurrence-weights",
            "0,0.1",
        ]
    events = defaults[0] if args.events is None else args.events
    plan = [("this tree", ROOT, args.items, n) for n in events]
    if args.before:
        old = source_tree(args.before, args.workdir)
        plan += [(args.before, old, args.before_items or args.items, n) for n in args.before_events or defaults[1]]
    cases: list[Case] = []
    result: dict = {"cases": []}
    for i, (code, tree, items, events) in enumerate(plan, 1):
        store = args.workdir / f"store-{items}-{events}"
        print(f"[{i}/{len(plan)}] {code}: writing {events:,} events over {items:,} items …", flush=True)
        _, _, info = write_store(store, items, events)
        out = args.workdir / f"run-{'new' if code == 'this tree' else code}-{items}-{events}"
        print(f"[{i}/{len(plan)}] {code}: aisle finetune (log: {out / 'finetune.log'}) …", flush=True)
        timeout = args.before_timeout if code != "this tree" else 24 * 3600.0
        case = run_finetune(Case(code, items, events, info["users"]), store, tree, out, extra, timeout)
        print(f"    {case.wall_s:.0f} s, peak RSS {gb(case.peak_rss_mb):.2f} GB, finished={case.finished}", flush=True)
        cases.append(case)
        result = write(cases, args.name, sys.argv[1:] if argv is None else argv, load_before)  # after every case
    if cases:
        print(render(result))
    return 0


def write(cases: list[Case], name: str, argv: list[str], load_before: tuple[float, ...]) -> dict:
    """``perf/results/<name>.{json,md,png}`` of the cases so far (a long run that is stopped keeps them)."""
    result = {
        "command": command_line("perf.bench_finetune_scale", argv),
        "machine": machine(load_before),
        "cases": [asdict(c) for c in cases],
        "checks": checks(cases),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(render(result))
    plot(result, RESULTS / f"{name}.png")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
