"""`aisle --help` stays light: the command modules import no toolchain until a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aisle_export.cli import build_parser

COMMANDS = [
    "export",
    "distill",
    "index",
    "serve",
    "events",
    "experiment",
    "catalog",
    "rules",
    "console",
    "demo",
    "finetune",
    "evaluate",
]
# what the handlers import: none of it may load for --help
HEAVY = {"torch", "onnx", "onnxruntime", "transformers", "sentence_transformers", "numpy", "scipy", "redis"}
HEAVY |= {"tritonclient", "faiss", "fastapi", "uvicorn"}

PROBE = """
import json, sys
from aisle_export.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_after(argvs: list[list[str]]) -> set[str]:
    """The top-level modules loaded by a fresh interpreter that ran ``aisle ARGV`` for each argv."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_help_imports_no_toolchain():
    assert loaded_after([["--help"]]).isdisjoint(HEAVY)


def test_every_command_help_imports_no_toolchain():
    sub = [["events", "export"], ["experiment", "report"], ["catalog", "update"]]
    assert loaded_after([[command, "--help"] for command in COMMANDS] + [[*s, "--help"] for s in sub]).isdisjoint(HEAVY)


def test_commands_are_listed_in_order_each_with_its_handler():
    parser = build_parser()
    (subparsers,) = [action for action in parser._actions if action.dest == "command"]
    assert list(subparsers.choices) == COMMANDS
    for name, command in subparsers.choices.items():
        assert callable(command.get_default("func")), name


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "aisle_export.cli", "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.startswith("usage: aisle ")
    assert "The ``aisle`` command: export, index, serve" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["catalog", "status", "--header", "bad"], "aisle catalog: error: --header wants KEY=VALUE, got 'bad'"),
        (["export", "--stack", "mean"], "aisle export: error: --stack picks from what --finetuned DIR trained"),
        (["export", "--engine", "tensorrt"], "aisle export: error: --engine tensorrt needs exactly one --precision"),
        (["evaluate", "--interactions", "log.csv"], "aisle evaluate: error: --interactions and --catalog go together"),
        (["catalog", "update"], "aisle catalog update: update needs --file"),
        (["catalog", "compact"], "aisle catalog compact: compact needs --repo"),
        (["catalog", "rollback"], "aisle catalog rollback: rollback needs --repo"),
        (["rules", "set"], "aisle rules set: set needs --file"),
    ],
)
def test_argument_errors_exit_1_with_the_command_named(argv, message, capsys):
    from aisle_export.cli import main

    assert main(argv) == 1
    assert capsys.readouterr().err.startswith(message)


def test_a_bad_positive_int_is_an_argparse_error(capsys):
    from aisle_export.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["distill", "--student", "layers", "--out", "x", "--steps", "0"])
    assert exit.value.code == 2
    assert "argument --steps: 0 is not ≥ 1" in capsys.readouterr().err
