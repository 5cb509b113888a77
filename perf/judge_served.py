"""The feed a model repository serves, judged on a log's test cut through a real tritonserver.

    python -m perf.judge_served --repo build/model_repository [--interactions LOG --catalog FILE] [--cutoff T] [--name NAME]

``aisle evaluate --finetuned`` scores the stack ``aisle finetune`` chose offline; this asks the
server itself. The repository is served as exported and indexed (``aisle export --finetuned DIR
--repo R``, then ``aisle index --catalog FILE --repo R``: the log signals ``aisle finetune`` wrote
are the training period's, so the served feed at the cut is the offline one), each test shopper's
history before the cut goes through the SDK with ``now`` = the cut, and the answers are scored
against the training period's popularity, paired over the same shoppers. The log and its cut are
read as ``aisle evaluate`` reads them (the same options); without ``--interactions``,
MovieLens-100K. Writes
``perf/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from perf.lib.run_info import RESULTS, command_line, machine


def main(argv: list[str] | None = None) -> int:
    from aisle_export.cli.common import add_log_arguments, log_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="an exported and indexed model repository")
    add_log_arguments(parser, knob_search=False)  # the log and its cut, read as `aisle evaluate` reads them
    parser.add_argument("--name", default="judge_served", help="report name under --out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        data = log_data(args)
    except ValueError as exc:
        parser.error(str(exc))

    from aisle import RecClient
    from aisle_export.demo import served_feed
    from aisle_export.judge.feed import against_popularity
    from aisle_server.tritonserver import TritonServer

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aisle-judge-") as work:
        started = time.perf_counter()
        with (
            TritonServer(args.repo, log_file=Path(work) / "tritonserver.log") as server,
            RecClient(server.grpc_url, timeout_s=30) as client,
        ):
            judged = against_popularity(data, served_feed(client, data))
    report = {
        "command": command_line("perf.judge_served", sys.argv[1:] if argv is None else argv),
        "machine": machine(load_before),
        "repo": str(args.repo),
        "log": str(data.report.path),
        "cutoff": data.split.cutoff,
        "served": judged,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"served feed nDCG@10 {judged['ranker']:.4f}, popularity {judged['popularity']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
