"""``aisle export``: both towers → ONNX (with parity) → a complete model repository.

The query tower feeds ``query_encoder`` and the served ``tokenizer``; the item tower feeds
``item_encoder`` (used by ``aisle index``). Both towers must share one tokenizer, because the served
``tokenizer`` model sits in front of both encoders; a mismatch is an error, not a silent drift.
"""
from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE

from .onnx_export import export_tower
from .repository import copy_template, write_configs

TOWERS = {"query_encoder": "query", "item_encoder": "item"}
REPORT_FILE = "export_report.json"


def export_repository(repo: Path, query_tower: str | None = None, item_tower: str | None = None) -> dict:
    repo = copy_template(Path(repo))
    sources = {"query_encoder": query_tower, "item_encoder": item_tower}
    report: dict = {}
    dims = set()
    for model, tower in sources.items():
        print(f"[export] {TOWERS[model]} tower → {repo / model / '1' / 'model.onnx'}", flush=True)
        result = export_tower(tower, repo / model / "1")
        dims.add(result.tower.dim)
        report[model] = {"tower": str(result.tower.path), "dim": result.tower.dim,
                         "max_length": result.tower.max_length, "parity": json.loads(result.parity.to_json())}
    if len(dims) != 1:
        raise ValueError(f"the towers' embedding sizes differ ({sorted(dims)}); they must share one space")
    query_dir, item_dir = repo / "query_encoder" / "1", repo / "item_encoder" / "1"
    for name in (TOKENIZER_FILE, SETTINGS_FILE):
        if not filecmp.cmp(query_dir / name, item_dir / name, shallow=False):
            raise ValueError(f"the towers' {name} differ; the served tokenizer must fit both towers")
        (repo / "tokenizer" / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(query_dir / name, repo / "tokenizer" / "1" / name)
    write_configs(repo, dims.pop())
    (repo / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
