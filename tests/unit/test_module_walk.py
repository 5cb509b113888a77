"""perf.module_walk records which toolchain module enters which (docs/toolchain.md's walks)."""

from __future__ import annotations

import sys

from aisle_export.data.catalog import read_catalog
from perf.module_walk import Walk


def test_walk_records_module_entries_and_sets_methods_apart(tmp_path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,title,popularity\n1,Oat milk,2\n2,Rye bread,\n", encoding="utf-8")
    walk = Walk()
    sys.setprofile(walk.profile)
    try:
        catalog = read_catalog(path)
        catalog.texts()  # called from outside the toolchain: not a call between its modules
    finally:
        sys.setprofile(None)
    assert len(catalog) == 2
    assert walk.entries() == {"data.records": ["data.catalog"]}
    called = {(caller, callee, function) for caller, _, callee, function in walk.calls}
    assert ("data.catalog", "data.records", "read_csv") in called
    assert ("data.catalog", "data.records", "parse_non_negative") in called
    assert all(callee != "data.catalog" for _, callee, _ in called)
