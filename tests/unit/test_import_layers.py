"""The project's import graph: no circles anywhere, and the toolchain's stages import only downward.

Imports inside functions count as edges too: a lazy import that dodges a circle at load time is
still a circle in the design. The graph is read from the source, not by importing it, so the walk
needs neither torch nor a server.
"""

from __future__ import annotations

import pytest
from import_graph import PACKAGES, find_cycle
from import_graph import graph as read_graph

#: the toolchain's floors, lowest first: a module may import its own floor and those below it
STAGES = ("core", "data", "build", "index", "judge", "learn", "distill", "experiments", "ops", "demo", "cli")
#: what each top-level package may import of the others (the SDK never needs server or toolchain code)
ALLOWED = {
    "aisle_contract": set(),
    "aisle": {"aisle_contract"},
    "aisle_server": {"aisle_contract"},
    "aisle_export": {"aisle_contract", "aisle_server", "aisle"},
    "perf": {"aisle_contract", "aisle_server", "aisle", "aisle_export"},
}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return read_graph()


def test_the_walk_sees_every_package_and_their_imports(graph):
    assert {name.split(".")[0] for name in graph} == set(PACKAGES)
    assert "aisle_export.core.towers" in graph["aisle_export.core.spaces"]
    assert "aisle_server.ranking" in graph["aisle_server.rerank_io"]
    assert "perf.bench_realtime.scenario" in graph["perf.bench_realtime.report"]
    assert "perf.lib.triton_stats" in graph["perf.bench_distill.scenario"], "from-imports of modules"


def test_no_import_circle_anywhere_in_the_project(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_circle(graph):
    planted = {**graph, "aisle_export.core.towers": graph["aisle_export.core.towers"] | {"aisle_export.cli"}}
    cycle = find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1]


def test_packages_import_only_what_their_place_allows(graph):
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if (a := source.split(".")[0]) != (b := target.split(".")[0]) and b not in ALLOWED[a]
    ]
    assert not wrong, "\n".join(wrong)


def _stage(module: str) -> int:
    parts = module.split(".")
    assert len(parts) > 1 and parts[1] in STAGES, f"{module} sits on no floor of {STAGES}"
    return STAGES.index(parts[1])


def test_every_toolchain_module_sits_on_a_floor_and_imports_only_downward(graph):
    toolchain = [name for name in graph if name.startswith("aisle_export.")]
    assert len(toolchain) > 30
    upward = [
        f"{source} ({STAGES[_stage(source)]}) imports {target} ({STAGES[_stage(target)]})"
        for source in toolchain
        for target in graph[source]
        if target.startswith("aisle_export.") and _stage(target) > _stage(source)
    ]
    assert not upward, "\n".join(upward)
