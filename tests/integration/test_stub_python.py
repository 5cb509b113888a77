"""The Python-backend stubs run Debian's Python whatever ``python3`` comes first on PATH, and a model
that cannot load says in one line which module failed to import and why.

The stub embeds Debian's libpython3.X and takes its standard library from the first ``python3`` on
the PATH it inherits (``aisle_server.tritonserver.prepare_stub_python``). Before the fix, a project
``.venv`` over another Python first on PATH (``source .venv/bin/activate``) gave the stubs that
Python's standard library: ``import ssl`` failed inside redis, so ``rerank``, ``track`` and
``catalog`` did not load once a state store was configured, which is why every server here has one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from aisle import RecClient
from aisle_server import tritonserver
from aisle_server.tritonserver import TritonServer, TritonServerError

pytestmark = pytest.mark.integration

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
STAR_WARS = "50"


def _stray_python(root: Path) -> Path:
    """A directory whose ``python3`` is no Debian interpreter: an install prefix of its own, with a
    ``lib/python3.X/os.py`` (the landmark getpath looks for) and nothing else of a standard library."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / f"python{VERSION}").mkdir(parents=True)
    (root / "lib" / f"python{VERSION}" / "os.py").write_text("")
    python = root / "bin" / "python3"
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    return root / "bin"


def _other_cpython(root: Path) -> Path | None:
    """A directory whose ``python3`` links to a CPython that is not Debian's (pyenv's, say): the one
    the test's own environment was made from, if that is not Debian's."""
    base = Path(sys.base_prefix).resolve()
    interpreter = base / "bin" / f"python{VERSION}"
    if base == Path("/usr") or not interpreter.is_file():
        return None
    root.mkdir(parents=True)
    (root / "python3").symlink_to(interpreter)
    return root


def _path_with_first(directory: Path) -> str:
    return os.pathsep.join([str(directory), os.environ.get("PATH", os.defpath)])


def _serves_every_model_and_recommends(repo: Path, state_url: str, log: Path) -> None:
    with TritonServer(repo, log_file=log, state_url=state_url) as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            models = {m.name: m.state for m in triton.get_model_repository_index().models}
        finally:
            triton.close()
        assert {"rerank", "track", "catalog", "recommend"} <= set(models), models
        assert set(models.values()) == {"READY"}, models
        with RecClient(server.grpc_url, timeout_s=20) as client:
            client.track("stub-python-shopper", STAR_WARS, "click", ts=time.time() - 60)  # through redis
            recs = client.recommend(user_id="stub-python-shopper", query="space opera", k=5)
            assert len(recs) == 5 and recs.unknown_history == 0


def test_the_server_loads_every_model_with_the_project_venv_first_on_path(repo, redis_server, monkeypatch, tmp_path):
    venv_bin = Path(sys.prefix) / "bin"  # the environment the tests run in: the project's .venv
    assert (venv_bin / "python3").exists(), venv_bin
    monkeypatch.setenv("PATH", _path_with_first(venv_bin))
    _serves_every_model_and_recommends(repo, redis_server.url, tmp_path / "tritonserver.log")


@pytest.mark.parametrize("python", ["another CPython", "a stray python3"])
def test_the_server_loads_every_model_with_an_unrelated_python3_first_on_path(
    python, repo, redis_server, monkeypatch, tmp_path
):
    if python == "another CPython":
        directory = _other_cpython(tmp_path / "other")
        if directory is None:
            pytest.skip("this environment's Python is Debian's own: no other CPython to put first")
    else:
        directory = _stray_python(tmp_path / "stray")
    monkeypatch.setenv("PATH", _path_with_first(directory))
    _serves_every_model_and_recommends(repo, redis_server.url, tmp_path / "tritonserver.log")


def _python_model(root: Path, name: str, model_py: str, files: dict[str, str] | None = None) -> None:
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=0,
        input=[mc.ModelInput(name="X", data_type=mc.TYPE_INT32, dims=[1])],
        output=[mc.ModelOutput(name="Y", data_type=mc.TYPE_INT32, dims=[1])],
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    (root / name / "1" / "model.py").write_text(textwrap.dedent(model_py))
    for filename, text in (files or {}).items():
        (root / name / "1" / filename).write_text(textwrap.dedent(text))


def test_a_model_that_cannot_import_is_named_in_one_line_with_the_module_and_the_error(tmp_path):
    repo = tmp_path / "repository"
    _python_model(
        repo,
        "shelf",
        """
        import os
        import sys

        sys.path.insert(0, os.path.dirname(__file__))
        import shelf_helpers  # noqa: F401 - raises while importing


        class TritonPythonModel:
            def execute(self, requests):
                return []
        """,
        {"shelf_helpers.py": "import json\n\nPARSE = json.loads_faster\n"},
    )
    _python_model(
        repo,
        "till",
        """
        import aisle_no_such_package  # noqa: F401


        class TritonPythonModel:
            def execute(self, requests):
                return []
        """,
    )
    server = TritonServer(repo, log_file=tmp_path / "tritonserver.log")
    with pytest.raises(TritonServerError) as caught:
        server.start()
    first = str(caught.value).splitlines()[0]
    print(first)
    assert "\\n" not in first and "At:" not in first, first  # not Triton's escaped traceback
    assert (
        f"model 'shelf' could not load: importing {repo / 'shelf' / '1' / 'shelf_helpers.py'} raised "
        "AttributeError: module 'json' has no attribute 'loads_faster'"
    ) in first, first
    assert (
        f"model 'till' could not load: importing {repo / 'till' / '1' / 'model.py'} raised "
        "ModuleNotFoundError: No module named 'aisle_no_such_package'"
    ) in first, first
    assert "failed to load 'shelf'" in str(caught.value)  # the log's own lines still follow
    assert not server.is_running()


def test_a_stub_whose_python_cannot_start_fails_the_start_at_once_and_says_why(monkeypatch, tmp_path):
    """Without Debian's interpreter to point the stubs at, a stray ``python3`` first on PATH gives them
    a standard library they cannot start with: tritonserver would wait for them until the deadline."""
    monkeypatch.setattr(tritonserver, "SYSTEM_PYTHON", str(tmp_path / "no-such-python{version}"))
    stray = _stray_python(tmp_path / "stray")
    monkeypatch.setenv("PATH", _path_with_first(stray))
    repo = tmp_path / "repository"
    _python_model(repo, "plain", "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    server = TritonServer(repo, log_file=tmp_path / "tritonserver.log", startup_timeout_s=120)
    started = time.monotonic()
    with pytest.raises(TritonServerError) as caught:
        server.start()
    first = str(caught.value).splitlines()[0]
    print(first)
    assert time.monotonic() - started < 60, "waited for a stub that had already died"
    assert "stub's Python could not start: failed to get the Python codec of the filesystem encoding" in first
    assert f"from the python3 found on PATH: '{stray / 'python3'}'" in first, first
    assert not server.is_running()


def _activated(venv: Path) -> dict[str, str]:
    """The environment ``source <venv>/bin/activate`` gives: the venv's bin first on PATH."""
    return {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": _path_with_first(venv / "bin")}


def test_aisle_serve_in_an_activated_environment_names_a_model_that_cannot_load_in_one_line(tmp_path):
    repo = tmp_path / "repository"
    _python_model(repo, "till", "import aisle_no_such_package  # noqa: F401\n")
    venv = Path(sys.prefix)
    done = subprocess.run(
        [str(venv / "bin" / "aisle"), "serve", "--repo", str(repo), "--state", "off", *_free_ports()],
        env=_activated(venv),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    first = next(line for line in done.stderr.splitlines() if line.startswith("aisle serve:"))
    assert (
        f"model 'till' could not load: importing {repo / 'till' / '1' / 'model.py'} raised "
        "ModuleNotFoundError: No module named 'aisle_no_such_package'"
    ) in first, done.stderr[-3000:]
    assert (tmp_path / "tritonserver.log").is_file()  # beside the repository, by default


def test_aisle_serve_stopped_while_its_models_load_exits_cleanly_and_leaves_nothing(tmp_path):
    """Ctrl-C (or a rollout's SIGTERM) before every model is ready stops the server as asked: exit
    code 0, not "tritonserver exited before it was ready" (CI once sent it just then)."""
    repo = tmp_path / "repository"
    loading = tmp_path / "loading"
    _python_model(
        repo,
        "slow",
        f"""
        import os
        import pathlib
        import site
        import time

        for directory in os.environ["AISLE_SITE_PACKAGES"].split(os.pathsep):  # numpy, as aisle's models
            site.addsitedir(directory)


        class TritonPythonModel:
            def initialize(self, args):
                pathlib.Path({str(loading)!r}).touch()
                time.sleep(20)

            def execute(self, requests):
                return []
        """,
    )
    venv = Path(sys.prefix)
    serve = subprocess.Popen(
        [str(venv / "bin" / "aisle"), "serve", "--repo", str(repo), "--state", "off", *_free_ports()],
        env=_activated(venv),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not loading.exists() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loading.exists(), "the model never began to load"
        serve.send_signal(signal.SIGINT)
        _, stderr = serve.communicate(timeout=120)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert serve.returncode == 0, stderr[-3000:]
    assert "stopped before every model was ready, as asked" in stderr
    # ...and the session's own check (tests/conftest.py) fails if it left tritonserver or a stub behind


def _free_ports() -> list[str]:
    return [f"--{name.replace('_', '-')}={port}" for name, port in tritonserver.server_ports().items()]
