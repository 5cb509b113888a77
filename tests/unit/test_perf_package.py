"""perf/ is one package run one way (``python -m perf.<name>``): no ``sys.path`` edits, package
``__init__`` files that import nothing of perf, a ``__main__`` guard on every command. (No import
circles: tests/unit/test_import_layers.py walks perf/ with the rest of the project.)"""

from __future__ import annotations

import ast
from pathlib import Path

from import_graph import graph, modules

PERF = Path(__file__).resolve().parents[2] / "perf"


def _uses_sys_path(path: Path) -> bool:
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
    )


def test_no_sys_path_edits_in_perf():
    offenders = [str(p.relative_to(PERF.parent)) for p in PERF.rglob("*.py") if _uses_sys_path(p)]
    assert not offenders, f"perf/ is a package run with python -m: no sys.path edits ({offenders})"


def test_package_inits_import_nothing_of_perf():
    """An ``__init__`` that imports runs on every import of its submodules: where cycles hide."""
    edges, paths = graph(), modules()
    for name, path in paths.items():
        if name.startswith("perf") and path.name == "__init__.py":
            assert not {m for m in edges[name] if m.startswith("perf")}, f"{path} imports perf modules"


def test_every_command_has_a_main_guard():
    """What ``python -m perf.<name>`` runs: a package's ``__main__``, or a module with a guard."""
    commands = [p for p in PERF.rglob("*.py") if p.name == "__main__.py" or "def main(" in p.read_text()]
    assert len(commands) >= 15
    for path in commands:
        assert 'if __name__ == "__main__":' in path.read_text(), f"{path} has main() but no guard"
