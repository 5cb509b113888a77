"""A failed start's log read into one line per cause (``aisle_server.tritonserver.load_failures``), and the
stubs' ``python3`` (``prepare_stub_python``); lines as tritonserver 2.51 wrote them."""

import subprocess
from pathlib import Path

from aisle_server import tritonserver
from aisle_server.tritonserver import load_failures, prepare_stub_python

SITE = "/work/main/.venv/lib/python3.11/site-packages"
FROZEN = "\\n  <frozen importlib._bootstrap>(241): _call_with_frames_removed"
REDIS = (
    "\"failed to load '{model}' version 1: Internal: AttributeError: 'NoneType' object has no attribute "
    f"'VerifyMode'\\n\\nAt:\\n  {SITE}/redis/asyncio/connection.py(1913): SSLConnection\\n"
    f"  {SITE}/redis/asyncio/connection.py(1903): <module>{FROZEN}\\n"
    f"  {SITE}/redis/__init__.py(1): <module>{FROZEN}\\n"
    "  /work/main/server/aisle_server/state.py(127): connect\\n"
    '  /work/main/server/aisle_server/triton_models.py(55): initialize\\n"'
)
LOG = [
    'I1206 08:59:05.923139 4869 model_lifecycle.cc:472] "loading: rerank:1"',
    'E1206 08:59:08.157243 4869 backend_model.cc:692] "ERROR: Failed to create instance: AttributeError: …"',
    "E1206 08:59:08.157409 4869 model_lifecycle.cc:642] " + REDIS.format(model="track"),
    "E1206 08:59:08.246937 4869 model_lifecycle.cc:642] " + REDIS.format(model="rerank"),
    "E1206 09:28:34.760317 982 model_lifecycle.cc:642] \"failed to load 'broken' version 1: Invalid argument: "
    "unable to find backend library for backend 'no_such_backend', try specifying runtime on the model "
    'configuration."',
    "E1206 08:59:09.297716 4869 model_repository_manager.cc:703] \"Invalid argument: ensemble 'recommend' "
    "depends on 'rerank' which has no loaded version. Model 'rerank' loading failed with error: …\"",
]


def test_models_that_failed_alike_share_one_line_naming_the_module_and_the_error():
    lines = load_failures(LOG, roots=[SITE])
    assert lines == [
        "models 'rerank', 'track' could not load: importing redis.asyncio.connection raised AttributeError: "
        "'NoneType' object has no attribute 'VerifyMode' (line 1913)",
        "model 'broken' could not load: unable to find backend library for backend 'no_such_backend', try "
        "specifying runtime on the model configuration.",
    ]


def test_a_module_outside_the_stubs_path_is_named_by_its_file():
    line = (
        "\"failed to load 'till' version 1: Internal: ModuleNotFoundError: No module named 'nope'\\n\\nAt:\\n"
        '  /repo/till/1/model.py(2): <module>\\n"'
    )
    assert load_failures([line], roots=[SITE]) == [
        "model 'till' could not load: importing /repo/till/1/model.py raised ModuleNotFoundError: "
        "No module named 'nope' (line 2)"
    ]


def test_an_error_raised_by_a_function_says_where():
    line = (
        "\"failed to load 'shelf' version 1: Internal: ValueError: bad knob\\n\\nAt:\\n"
        f'  {SITE}/aisle_server/triton_models.py(70): setup\\n  {SITE}/aisle_server/triton_models.py(55): initialize\\n"'
    )
    assert load_failures([line], roots=[SITE]) == [
        f"model 'shelf' could not load: ValueError: bad knob (at {SITE}/aisle_server/triton_models.py:70, in setup)"
    ]


def test_a_stub_whose_python_cannot_start_says_which_python3_it_found():
    dump = [
        "Python path configuration:",
        "  program name = 'python3'",
        "  isolated = 1",
        "  stdlib dir = '/tmp/stray/lib/python3.11'",
        "  sys.executable = '/tmp/stray/bin/python3'",
        "terminate called after throwing an instance of 'std::runtime_error'",
        "  what():  failed to get the Python codec of the filesystem encoding",
    ]
    assert load_failures(dump, roots=[SITE]) == [
        "a stub's Python could not start: failed to get the Python codec of the filesystem encoding (standard "
        "library '/tmp/stray/lib/python3.11', from the python3 found on PATH: '/tmp/stray/bin/python3')"
    ]


def test_a_clean_log_has_no_failures():
    assert load_failures(LOG[:1], roots=[SITE]) == []


def test_the_stubs_python3_links_to_debians_interpreter(tmp_path, monkeypatch):
    interpreter = tmp_path / "usr" / "bin" / "python3.11"
    interpreter.parent.mkdir(parents=True)
    interpreter.write_text("")
    monkeypatch.setattr(tritonserver, "SYSTEM_PYTHON", str(tmp_path / "usr" / "bin" / "python{version}"))
    target = prepare_stub_python(tmp_path / "python", "3.11")
    assert target == tmp_path / "python" and [p.name for p in target.iterdir()] == ["python3"]
    assert (target / "python3").resolve() == interpreter
    assert prepare_stub_python(tmp_path / "other", "3.99") is None  # no such interpreter: PATH left alone
    assert not (tmp_path / "other").exists()


def test_the_server_puts_the_stubs_python3_first_on_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/somewhere/else/bin:/usr/bin")
    server = tritonserver.TritonServer(tmp_path)
    assert server.environment()["PATH"] == "/somewhere/else/bin:/usr/bin"  # not started: nothing to put first
    server._stub_python = Path("/tmp/aisle-triton-x/python")
    assert server.environment()["PATH"] == "/tmp/aisle-triton-x/python:/somewhere/else/bin:/usr/bin"


def test_a_server_that_died_says_how_and_what_it_logged_last(tmp_path):
    log = tmp_path / "tritonserver.log"
    log.write_text('I1206 10:00:00.1 1 grpc_server.cc:2466] "Started GRPCInferenceService at 127.0.0.1:1"\n')
    server = tritonserver.TritonServer(tmp_path, log_file=log)
    assert server.exit_report() is None  # never started
    # a stand-in for tritonserver: it logs an error line, then a signal ends it
    script = f"echo 'E1206 10:00:01.2 1 server.cc:1] \"fatal: out of memory\"' >> {log}; kill -TERM $$"
    server._process = subprocess.Popen(["sh", "-c", script])
    server._process.wait(timeout=30)
    report = server.exit_report()
    assert report is not None and f"(pid {server._process.pid}) was killed by SIGTERM" in report
    assert '"fatal: out of memory"' in report and "Started GRPCInferenceService" in report
    server._process = subprocess.Popen(["sh", "-c", "exit 3"])
    server._process.wait(timeout=30)
    assert "exited with code 3" in (server.exit_report() or "")
    server._process = subprocess.Popen(["sleep", "30"])
    try:
        assert server.exit_report() is None  # still running
    finally:
        server._process.kill()
        server._process.wait()
