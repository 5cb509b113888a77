"""Start and stop the FastAPI baseline under uvicorn on 127.0.0.1, like ``TritonServer`` does Triton."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aisle_server.tritonserver import free_port

ROOT = Path(__file__).resolve().parents[2]


class FastApiServer:
    def __init__(self, repo: Path, port: int = 0, log_file: Path | None = None, startup_timeout_s: float = 180.0):
        self.repo, self.port = Path(repo).resolve(), port or free_port()
        self.log_file, self.startup_timeout_s = log_file, startup_timeout_s
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FastApiServer:
        env = dict(os.environ, AISLE_REPO=str(self.repo), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env["PYTHONPATH"] = ":".join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        if self.log_file is not None:
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop(
        self.process = subprocess.Popen(  # fixed command
            [
                sys.executable,
                "-m",
                "uvicorn",
                "perf.baselines.fastapi_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:  # loopback
                    if response.status == 200 and b"true" in response.read():
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"FastAPI baseline not ready after {self.startup_timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> FastApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
