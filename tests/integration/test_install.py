"""Aisle as people install it: the wheel, outside the source tree, in fresh virtual environments.

1. The SDK alone, with numpy 2.x and the newest tritonclient the package index serves, calls the
   real server synchronously and with asyncio, and ``import aisle`` loads nothing of the server or
   the toolchain (their dependencies are not even installed there).
2. The toolchain installed non-editable runs ``aisle export`` → ``aisle index`` → ``aisle serve``
   from a directory outside the checkout: the repository template and every file it reads come
   from the installed package.

Why the toolchain environment borrows its dependencies: installing torch, transformers and the
tower weights again costs minutes of CI for no new information. Its ``site-packages`` gets the
project environment's ``site-packages`` through a ``.pth`` line, which adds the directory but not
that environment's own ``.pth`` files: the editable install of the checkout is not visible there,
so every ``aisle*`` module it imports is the wheel's (the test checks where they load from).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from aisle_server.tritonserver import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("PYTHONPATH", None)


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def _not_sources(directory: str, names: list[str]) -> list[str]:
    """What a copy of the checkout leaves out: git, the venv, caches, the top-level build/ output."""
    top = Path(directory) == ROOT
    return [
        name
        for name in names
        if name in (".git", ".venv", "__pycache__", ".pytest_cache")
        or name.endswith(".egg-info")
        or (top and name == "build")
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, and the two
    # xdist workers may build at once (this module's tests run on both).
    source = out / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_not_sources)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)])
    (built,) = out.glob("aisle-*.whl")
    return built


SDK_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import aisle
    from aisle import AsyncRecClient, RecClient

    url = sys.argv[1]
    with RecClient(url, timeout_s=30) as client:
        search = [r.item_id for r in client.recommend(query="space adventure", k=5)]
        feed = [r.item_id for r in client.recommend(history=[("1", 1.0e9), ("50", 1.0e9)], k=5)]

    async def main():
        async with AsyncRecClient(url, timeout_s=30) as client:
            return [r.item_id for r in await client.recommend(query="space adventure", k=5)]

    print(json.dumps({"search": search, "feed": feed, "async_search": asyncio.run(main()),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("aisle_server", "aisle_export", "tokenizers",
                                                                      "torch", "onnxruntime")),
        "aisle_from": aisle.__file__}))
""")


def test_the_sdk_alone_installs_with_numpy_2_and_the_newest_tritonclient(wheel, server, tmp_path):
    python = _venv(tmp_path / "sdk")
    _run([str(python), "-m", "pip", "install", "-q", str(wheel), "numpy>=2", "--upgrade", "tritonclient[grpc]"])
    versions = json.loads(
        _run(
            [
                str(python),
                "-c",
                "import json, importlib.metadata as m; print(json.dumps("
                "{d: m.version(d) for d in ('numpy', 'tritonclient', 'aisle')}))",
            ]
        )
    )
    assert int(versions["numpy"].split(".")[0]) >= 2
    assert tuple(int(x) for x in versions["tritonclient"].split(".")[:2]) > (2, 50)
    script = tmp_path / "sdk_calls.py"
    script.write_text(SDK_SCRIPT)
    out = json.loads(_run([str(python), str(script), server.grpc_url], cwd=tmp_path).strip().splitlines()[-1])
    assert out["loaded"] == [], out["loaded"]  # nothing of the server or the toolchain behind `import aisle`
    assert str(tmp_path / "sdk") in out["aisle_from"]
    assert len(out["search"]) == 5 and len(out["feed"]) == 5 and out["async_search"] == out["search"]
    for missing in ("tokenizers", "torch", "nvidia-pytriton", "onnxruntime"):  # the SDK pulled none of them
        probe = subprocess.run([str(python), "-m", "pip", "show", "-q", missing], env=ENV, capture_output=True)
        assert probe.returncode != 0, f"{missing} was installed with the SDK"


def test_the_toolchain_runs_from_an_installed_wheel_outside_the_checkout(wheel, movielens_catalog, tmp_path):
    python = _venv(tmp_path / "toolchain")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    aisle = [str(python), "-m", "aisle_export.cli"]
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    where = json.loads(
        _run(
            [
                str(python),
                "-c",
                "import json, aisle, aisle_export, aisle_server, aisle_contract; "
                "from aisle_export.build.repository import TEMPLATE_DIR; print(json.dumps([aisle.__file__, "
                "aisle_export.__file__, aisle_server.__file__, aisle_contract.__file__, str(TEMPLATE_DIR)]))",
            ],
            cwd=elsewhere,
        )
    )
    assert all(path.startswith(str(site)) for path in where), where  # the wheel's modules, not the checkout's

    _run([*aisle, "export", "--repo", "repo"], cwd=elsewhere, timeout=900)
    _run([*aisle, "index", "--catalog", str(movielens_catalog), "--repo", "repo"], cwd=elsewhere, timeout=900)
    grpc_port, http_port, metrics_port = free_ports(3)  # one call: three distinct ports
    serve = subprocess.Popen(
        [
            *aisle,
            "serve",
            "--repo",
            "repo",
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=elsewhere,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        script = (
            "import sys\nfrom aisle import RecClient\n"
            "with RecClient(sys.argv[1], timeout_s=30) as c:\n"
            "    c.wait_ready(timeout_s=300)\n"
            "    print(len(c.recommend(query='toy story', k=7)))\n"
        )
        assert _run([str(python), "-c", script, f"127.0.0.1:{grpc_port}"], cwd=elsewhere).strip() == "7"
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = serve.wait()
    # ...and the session's own check (tests/conftest.py) fails if it left tritonserver or a stub behind
    assert code == 0, serve.stderr.read()[-3000:] if serve.stderr else code
