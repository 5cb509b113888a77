"""The README's SDK examples run as written (against the test server's address)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def sdk_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## SDK\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the SDK section should show a sync and an async example"
    return blocks


@pytest.mark.parametrize("index", [0, 1])
def test_readme_sdk_example_runs(server, index, capsys):
    code = sdk_examples()[index].replace("127.0.0.1:8001", server.grpc_url)
    exec(compile(code, f"README.md SDK example {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()
