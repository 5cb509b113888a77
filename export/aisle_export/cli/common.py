"""What several ``aisle`` commands share: the default repository, argument types, the log options."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aisle_export.data.splits import LogData
    from aisle_export.judge.feed import KnobGrid

# The toolchain is imported inside the functions: numpy and its kin must not load for `aisle --help`.

DEFAULT_REPO = Path("build/model_repository")

#: What ``add_parser(subparsers)`` of each command module receives.
Subparsers = argparse._SubParsersAction  # argparse names no public type for it


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not ≥ 1")
    return value


def headers(pairs: list[str] | None) -> dict[str, str]:
    """``--header KEY=VALUE`` (repeatable) as a dict of gRPC headers."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--header wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def event_weights(text: str | None) -> dict[str, float]:
    """``--event-weights TYPE=W,...`` as the interaction reader takes it."""
    from aisle_export.data.interactions import parse_event_weights

    return parse_event_weights(text)


def cutoff(text: str | None) -> float | None:
    """``--cutoff``: unix seconds or ISO-8601 (naive = UTC), read as the catalog reads times."""
    if text is None:
        return None
    from aisle_export.data.records import RowError, parse_time

    try:
        return parse_time(text, "--cutoff")
    except RowError as exc:
        raise ValueError(str(exc)) from None


def add_log_arguments(p: argparse.ArgumentParser, knob_search: bool = True) -> None:
    """The interaction-log options ``finetune`` and ``evaluate`` share (what :func:`log_data` reads),
    and with ``knob_search`` the knob grid's."""
    p.add_argument(
        "--interactions",
        type=Path,
        help="the store's log: CSV, JSONL or Parquet with user_id, item_id, timestamp "
        "[, event_type, weight] (default: MovieLens-100K's ratings)",
    )
    p.add_argument("--catalog", type=Path, help="the catalog the log's item ids refer to (with --interactions)")
    cut = p.add_mutually_exclusive_group()
    cut.add_argument("--cutoff", help="temporal cut, unix seconds or ISO-8601: nothing at or after it is trained on")
    cut.add_argument(
        "--cutoff-quantile",
        type=float,
        default=0.8,
        help="temporal cut at this quantile of the log's timestamps (default 0.8)",
    )
    p.add_argument(
        "--event-weights",
        metavar="TYPE=W,...",
        help="weights of event types (default purchase=1,add_to_cart=0.5,click=0.25,view=0.1; others 1)",
    )
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and count unreadable rows instead of failing")
    p.add_argument("--workdir", type=Path, default=Path("build"), help="MovieLens cache under <workdir>/data")
    if not knob_search:
        return
    p.add_argument(
        "--popularity-weights",
        metavar="W,...",
        help="feed popularity weights the knob search tries (default 0,0.25,0.5,1,2,4)",
    )
    p.add_argument(
        "--cooccurrence-weights",
        metavar="W,...",
        help="co-occurrence weights the knob search tries (default 0,0.05,0.1,0.2,0.5,1)",
    )


def number_list(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` → (0.0, 0.5, 1.0); () when any part is not a finite number (the caller names its flag)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        return ()
    return values if all(math.isfinite(v) for v in values) else ()


def knob_grid(args: argparse.Namespace) -> KnobGrid:
    """The knob search's grid: ``--popularity-weights`` and ``--cooccurrence-weights``, else the full one."""
    from aisle_export.judge.feed import KnobGrid

    grid = KnobGrid()
    for option, field in (("popularity_weights", "popularity"), ("cooccurrence_weights", "cooccurrence")):
        text = getattr(args, option)
        if text is None:
            continue
        values = number_list(text)
        if not values or min(values) < 0:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} {text!r}: comma-separated weights ≥ 0, e.g. 0,0.5,1")
        grid = replace(grid, **{field: values})
    return grid


def log_data(args: argparse.Namespace) -> LogData:
    """The interaction log and catalog of ``--interactions/--catalog`` (or MovieLens-100K), cut in time."""
    from aisle_export.data.movielens import movielens_files
    from aisle_export.data.splits import load_log

    if (args.interactions is None) != (args.catalog is None):
        raise ValueError("--interactions and --catalog go together")
    interactions, catalog = (args.interactions, args.catalog) if args.interactions else movielens_files(args.workdir)
    data = load_log(
        interactions,
        catalog,
        cutoff=cutoff(args.cutoff),
        cutoff_quantile=args.cutoff_quantile,
        skip_bad_rows=args.skip_bad_rows,
        event_weights=event_weights(args.event_weights),
    )
    report = data.report
    print(
        f"log {report.path}: {report.kept} interactions kept of {report.rows} rows; skipped {report.skipped}, "
        f"items not in the catalog {report.unknown_items}; test shoppers {len(data.split.users)}, "
        f"validation shoppers {len(data.valid.users)}",
        file=sys.stderr,
    )
    return data
