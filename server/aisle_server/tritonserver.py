"""Start, watch and stop the ``tritonserver`` that ships inside ``nvidia-pytriton``.

Why not Docker: this is the same Triton (2.51) with the Python backend and the local response
cache, runnable on any Linux box with ``pip``. In the Triton container the same model repository
is served by the container's own ``tritonserver``; this module is only the local launcher.

The server binds to 127.0.0.1 unless told otherwise. ``TritonServer`` is a context manager:
it waits until every model is ready and always stops the process (SIGTERM, then SIGKILL).

Why a process group: each Python-backend model runs in a ``triton_python_backend_stub`` process
that tritonserver forks. When tritonserver dies without draining (SIGKILL, a crash), its stubs
are orphaned, ignore SIGTERM and keep their memory (each is a Python process holding its model).
tritonserver is therefore started as the leader of a new process group, which its stubs inherit,
and stopping always ends with SIGKILL to the whole group, so nothing it started outlives it. And
should the owner itself be killed (``kill -9``, a CI job's timeout), tritonserver is sent SIGTERM
then (``processes.ends_with_this_process``: ``setpriv --pdeathsig``) and stops with its stubs.

Why a shared-memory prefix: each stub talks to tritonserver through a POSIX shared-memory region
(``/dev/shm``, 1 MB and up). A drained server unlinks its regions; a killed one leaves them, and
they hold memory until the machine reboots, in a ``/dev/shm`` that is small in a container (Docker:
64 MB). Each server names its regions with a prefix of its own (the Python backend's
``shm-region-prefix-name``), and ``stop`` unlinks whatever is left under it.

Why a ``python3`` of our own first on the server's PATH: see :func:`prepare_stub_python`.

Why a failed start reads the log: Triton reports a model that did not load as one log line with the
Python traceback escaped into it (``\\n``), after many others; :func:`load_failures` turns those
into one line each (which model, which module failed to import, and the exception), and that is
what ``TritonServerError`` says first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import workdirs
from .processes import ends_with_this_process, kill_process_group

LOG = logging.getLogger(__name__)

#: The Python backend's stub loads model.py in Debian's Python in isolated mode, which ignores
#: PYTHONPATH; our model.py files read this variable (directories joined by ``os.pathsep``) and add
#: each with ``site.addsitedir``: see ``stub_path``.
SITE_PACKAGES_ENV = "AISLE_SITE_PACKAGES"
#: The state store (``redis://HOST:PORT``) that ``rerank`` and ``track`` use (``aisle_server.state``).
STATE_URL_ENV = "AISLE_STATE_URL"
#: Where POSIX shared-memory objects live on Linux (``shm_open``).
SHARED_MEMORY_DIR = Path("/dev/shm")
#: Debian's interpreter for the ``libpython3.X.so.1.0`` the stubs link (``ldd triton_python_backend_stub``):
#: its prefix, ``/usr``, holds the standard library built for that libpython. See ``prepare_stub_python``.
SYSTEM_PYTHON = "/usr/bin/python{version}"
#: Each start's working directory (its backend directory and python3 shim), under the system's
#: temporary directory; the ones of killed owners are removed by the next start (``workdirs``).
WORKDIR_PREFIX = "aisle-triton-"


class TritonServerError(RuntimeError):
    """tritonserver could not be started, or exited while we waited for it."""


def _pytriton_root() -> Path:
    try:
        import pytriton  # optional dependency: aisle[server]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TritonServerError("nvidia-pytriton is not installed: pip install 'aisle[server]'") from exc
    return Path(pytriton.__file__).resolve().parent


def _python_version() -> str:
    """``3.11``: the stub (and so the libpython) matches the Python that runs this launcher."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def stub_path() -> list[str]:
    """What the stubs put on ``sys.path``: the directories of the aisle packages this process runs,
    then its environment's site-packages.

    So the models run the very code of the launcher: from a source checkout or a git worktree with
    ``PYTHONPATH=server:contract``, that checkout's ``aisle_server``, ahead of whatever an editable
    install in site-packages maps to (its finder comes after ``sys.path``); from an installed wheel,
    site-packages alone (the packages live there).
    """
    import aisle_contract

    site_packages = _site_packages()
    packages = (Path(__file__).resolve().parent, Path(aisle_contract.__file__).resolve().parent)
    roots = [str(package.parent) for package in packages]
    return [*dict.fromkeys(root for root in roots if Path(root) != Path(site_packages).resolve()), site_packages]


#: the port fields a ``TritonServer`` fills with free ports when not given
_PORTS = ("grpc_port", "http_port", "metrics_port")
#: starts tried when a port the server chose itself was taken before tritonserver bound it, or when
#: tritonserver aborted in one of ``STARTUP_ABORTS``
PORT_ATTEMPTS = 3
#: tritonserver's own intermittent aborts while Python-backend stubs start: a stub's shared-memory
#: mutex throws and the whole server aborts (signal 6; an open upstream issue, seen once in
#: this project's fresh-clone test runs, at a stub of `test_stub_python`); the same start, tried again, comes up.
STARTUP_ABORTS = ("boost::interprocess::lock_exception",)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int, avoid: Sequence[int] = ()) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now, none of ``avoid``.

    One server's ports are chosen together: :func:`free_port` called once per port can hand the
    same port out twice (each socket is closed before the next is bound), and tritonserver then
    refuses to start ("cannot listen to HTTP requests and GRPC requests at the same address and
    port"). Here every socket stays bound until all are chosen."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:  # a port given to the same server but not bound yet
                ports.append(port)
        return ports


def server_ports() -> dict[str, int]:
    """A gRPC, an HTTP and a metrics port for one server, distinct and free (``TritonServer``'s keywords)."""
    return dict(zip(_PORTS, free_ports(len(_PORTS))))


def prepare_backend_directory(target: Path) -> Path:
    """Lay out ``target/python`` the way tritonserver expects: backend library, utils, stub.

    pytriton keeps the stub per Python version under ``python_backend_stubs/``; the stub must
    match the Python that runs model.py (Debian's system Python 3.11 here).
    """
    tritonserver_dir = _pytriton_root() / "tritonserver"
    version = _python_version()
    sources = [
        tritonserver_dir / "backends" / "python" / "libtriton_python.so",
        tritonserver_dir / "backends" / "python" / "triton_python_backend_utils.py",
        tritonserver_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not source.exists():
            raise TritonServerError(f"missing {source} in nvidia-pytriton")
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target


def prepare_stub_python(target: Path, version: str | None = None) -> Path | None:
    """``target`` holding one ``python3``, a link to Debian's interpreter, for the front of the server's PATH.

    Why: the stub starts its embedded Python (Debian's ``libpython3.X``) isolated
    (``PyConfig_InitIsolatedConfig``: PYTHONHOME and PYTHONPATH are ignored) without a program name,
    so CPython's getpath takes ``python3``, looks it up on PATH, follows its symlinks and takes the
    prefix from what it finds: the ``home`` of a ``pyvenv.cfg`` beside it, or the nearest
    ``lib/python3.X/os.py`` above it, else the library's own ``/usr``. Whatever ``python3`` came first
    on the launcher's PATH decided which standard library Debian's libpython ran: with a virtual
    environment over another Python first (``source .venv/bin/activate``, the venv made by pyenv's
    3.11), the stubs loaded pyenv's, whose C extensions do not fit Debian's libpython (``_ssl``:
    undefined symbol), ``import ssl`` failed inside redis, and ``rerank``, ``track`` and ``catalog``
    never loaded. The link makes that lookup find Debian's interpreter, whatever the PATH: the
    stubs' standard library is Debian's, and every other name on PATH resolves as it did.

    Returns None (PATH left alone, with a warning) where Debian's interpreter is not there.
    """
    interpreter = Path(SYSTEM_PYTHON.format(version=version or _python_version()))
    if not interpreter.is_file():
        LOG.warning(
            "%s not found: the Python-backend stubs take their standard library from the first python3 on PATH",
            interpreter,
        )
        return None
    target.mkdir(parents=True, exist_ok=True)
    link = target / "python3"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(interpreter)
    return target


#: ``failed to load 'rerank' version 1: Internal: AttributeError: …\\n\\nAt:\\n  file(line): function…``
_LOAD_FAILURE = re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<error>.*?)\"?$")
#: Triton's status codes, ahead of the Python exception in a load failure.
_STATUS_PREFIX = re.compile(
    r"^(?:Internal|Invalid argument|Not found|Unavailable|Unknown|Unsupported|Already exists|Unimplemented): "
)
#: One frame of the traceback Triton appends after ``At:``, innermost first: ``  /path/x.py(12): func``.
_FRAME = re.compile(r"^\s+(?P<file>.+)\((?P<line>\d+)\): (?P<function>.+)$")
#: What a stub whose Python could not initialize prints (CPython's path dump, or its fatal error).
_STUB_START_FAILURE = ("Python path configuration:", "Fatal Python error:")


def _unescape(text: str) -> str:
    """Triton's log quotes a message: ``\\n`` for a newline, ``\\"`` for a quote."""
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else "\t" if m[1] == "t" else m[1], text)


def _module_name(path: str, roots: Sequence[str]) -> str:
    """``redis.asyncio.connection`` for ``…/site-packages/redis/asyncio/connection.py``; else the path."""
    for root in sorted(roots, key=len, reverse=True):
        root = root.rstrip("/") + "/"
        if path.startswith(root) and path.endswith(".py"):
            parts = path[len(root) : -3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and all(part.isidentifier() for part in parts):
                return ".".join(parts)
    return path


def _why(error: str, roots: Sequence[str]) -> str:
    """One line for one load failure's error: the module that failed to import and the exception."""
    head, _, trace = _unescape(error).partition("\n")
    head = _STATUS_PREFIX.sub("", head.strip())
    frames = [m for m in (_FRAME.match(line) for line in trace.splitlines()) if m]
    frames = [m for m in frames if not m["file"].startswith("<frozen")]
    if not frames:
        return head
    where = f"{frames[0]['file']}:{frames[0]['line']}"
    module = next((m["file"] for m in frames if m["function"] == "<module>"), None)
    if module is None:  # raised by a function, not while importing
        return f"{head} (at {where}, in {frames[0]['function']})"
    where = f"line {frames[0]['line']}" if frames[0]["file"] == module else f"at {where}"
    return f"importing {_module_name(module, roots)} raised {head} ({where})"


def _stub_start_failure(lines: Sequence[str]) -> str | None:
    """One line for a stub whose embedded Python could not start; None if none failed."""
    if not any(line.startswith(_STUB_START_FAILURE) for line in lines):
        return None
    settings: dict[str, str] = {}
    for line in lines:  # from CPython's "Python path configuration:" dump
        match = re.match(r"^\s+(stdlib dir|sys\.executable) = '(.*)'$", line)
        if match:
            settings[match[1]] = match[2]
    reason = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines
            if line.strip().startswith(("what():", "Fatal Python error:"))
        ),
        "its Python did not initialize",
    )
    found = f" (standard library {settings['stdlib dir']!r}" if "stdlib dir" in settings else ""
    if found and "sys.executable" in settings:
        found += f", from the python3 found on PATH: {settings['sys.executable']!r}"
    return f"a stub's Python could not start: {reason}{found + ')' if found else ''}"


def load_failures(lines: Sequence[str], roots: Sequence[str] = ()) -> list[str]:
    """What a start's log says did not load, one line per cause, models with the same cause together.

    ``models 'catalog', 'rerank' could not load: importing redis.asyncio.connection raised
    AttributeError: 'NoneType' object has no attribute 'VerifyMode' (line 1913)``.
    ``roots``: the stubs' ``sys.path`` entries, to name a module by its dotted name (default:
    :func:`stub_path`).
    """
    if not roots:
        try:
            roots = stub_path()
        except ImportError:  # pragma: no cover - aisle_contract is always there with the server
            roots = []
    causes: dict[str, list[str]] = {}
    for line in lines:
        match = _LOAD_FAILURE.search(line)
        if match:
            models = causes.setdefault(_why(match["error"], roots), [])
            if match["model"] not in models:
                models.append(match["model"])
    summary = []
    stub = _stub_start_failure(lines)
    if stub:
        summary.append(stub)
    for why, models in causes.items():
        names = ", ".join(f"'{model}'" for model in sorted(models))
        summary.append(f"{'models' if len(models) > 1 else 'model'} {names} could not load: {why}")
    return summary


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class TritonServer:
    """A running tritonserver over ``repo``; use as ``with TritonServer(repo) as server: ...``.

    Ports default to free ones so tests can run side by side; ``aisle serve`` passes 8000-8002.
    ``model_config_name`` selects ``<model>/configs/<name>.pbtxt`` where a model has one.
    """

    repo: Path
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"
    model_config_name: str | None = None
    model_control_mode: str = "none"
    log_verbose: int = 0
    log_file: Path | None = None
    extra_args: Sequence[str] = ()
    #: Bytes for Triton's local response cache (``--cache-config local,size=N``); 0 = no cache.
    #: Only models whose config has ``response_cache { enable: true }`` use it (see
    #: ``aisle_export.build.repository``: off by default).
    response_cache_bytes: int = 0
    #: The state store the models use (``AISLE_STATE_URL``); None: whatever the environment says.
    state_url: str | None = None
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _workdir: workdirs.Workdir | None = field(default=None, init=False, repr=False)
    _log_handle: object | None = field(default=None, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)  # where this start's lines begin in log_file
    _log_scanned: int = field(default=0, init=False, repr=False)  # how far ``_stub_failed`` has read it
    _stub_python: Path | None = field(default=None, init=False, repr=False)  # see prepare_stub_python
    _own_ports: list[str] = field(default_factory=list, init=False, repr=False)  # see __post_init__
    #: The Python backend's shared-memory region prefix, new at each start (see the module docstring).
    shm_prefix: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.repo = Path(self.repo).resolve()
        #: the ports this server chose itself (none given): another process may take one between the
        #: choice and tritonserver's bind, and then ``start`` chooses again
        self._own_ports = [name for name in _PORTS if not getattr(self, name)]
        self._choose_ports()

    def _choose_ports(self) -> None:
        given = [getattr(self, name) for name in _PORTS if name not in self._own_ports]
        for name, port in zip(self._own_ports, free_ports(len(self._own_ports), avoid=given)):
            setattr(self, name, port)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        assert self._workdir is not None
        root = _pytriton_root() / "tritonserver"
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={self._workdir.path / 'backends'}",
            f"--cache-directory={root / 'caches'}",
            f"--grpc-address={self.host}",
            f"--http-address={self.host}",
            f"--metrics-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            f"--model-control-mode={self.model_control_mode}",
            f"--log-verbose={self.log_verbose}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        if self.response_cache_bytes:
            cmd.append(f"--cache-config=local,size={int(self.response_cache_bytes)}")
        cmd.extend(self.extra_args)
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = str(_pytriton_root().parent / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), libs) if p)
        env[SITE_PACKAGES_ENV] = os.pathsep.join(stub_path())
        if self._stub_python is not None:  # the stubs' python3, whatever came first: see prepare_stub_python
            env["PATH"] = os.pathsep.join([str(self._stub_python), env.get("PATH", os.defpath)])
        if self.state_url is not None:
            env[STATE_URL_ENV] = self.state_url
        # The Python-backend stubs inherit this: rerank's per-request numpy work (MMR/DPP rows,
        # candidate scoring) is too small to split across threads, and a multi-threaded OpenBLAS
        # makes each of DPP's per-pick matrix-vector products wait for a core that ONNX Runtime is
        # using: DPP ran several times slower with it (figures: docs/results.md, "MMR / DPP cost"
        # under "Content ranking study"). Set it to override.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return env

    def start(self) -> TritonServer:
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start()
            except TritonServerError as exc:
                aborted = next((marker for marker in STARTUP_ABORTS if marker in str(exc)), None)
                taken = bool(self._own_ports) and "already in use" in str(exc)
                if attempt == PORT_ATTEMPTS - 1 or not (taken or aborted):
                    raise
                if taken:
                    LOG.warning("a port this server chose was taken before tritonserver bound it; choosing again")
                    self._choose_ports()
                else:
                    LOG.warning(
                        "tritonserver aborted while its Python-backend stubs started (%s); starting it again", aborted
                    )
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self) -> TritonServer:
        if not self.repo.is_dir():
            raise TritonServerError(f"model repository {self.repo} does not exist")
        self._workdir = workdirs.create(WORKDIR_PREFIX)  # and those killed owners left: see workdirs
        self.shm_prefix = f"aisle_triton_{uuid.uuid4().hex[:12]}_"
        prepare_backend_directory(self._workdir.path / "backends")
        self._stub_python = prepare_stub_python(self._workdir.path / "python")
        if self.log_file is not None:
            self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop(
            out = self._log_handle
        else:
            out = None
        LOG.info("starting tritonserver on %s (grpc) over %s", self.grpc_url, self.repo)
        self._process = subprocess.Popen(  # fixed binary, arguments built above
            ends_with_this_process(self.command()),  # stops with its owner, even a killed one
            env=self.environment(),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,  # its own process group: see the module docstring
        )
        self._log_offset = self._log_handle.tell() if self._log_handle is not None else 0  # type: ignore[attr-defined]
        self._log_scanned = self._log_offset
        try:
            self.wait_ready(self.startup_timeout_s)
        except TritonServerError as exc:
            self.stop()
            lines = self._start_log()
            why = "; ".join(load_failures(lines))
            raise TritonServerError(f"{exc}{': ' + why if why else ''}{self._log_tail(lines)}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start_log(self) -> list[str]:
        """What this start wrote to ``log_file`` so far (nothing without one)."""
        if self.log_file is None:
            return []
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def _log_tail(self, lines: list[str]) -> str:
        """What this start logged that says why it failed, for the error message: its error lines and
        its last lines; a CI run keeps only the test's output."""
        errors = [line for line in lines if line.startswith("E") and "CudaDriverHelper" not in line]
        shown = list(dict.fromkeys(errors[-10:] + lines[-5:]))  # in order, once each
        return f"; from {self.log_file}:\n" + "\n".join(shown) if shown else ""

    def wait_ready(self, timeout_s: float) -> None:
        """Poll ``/v2/health/ready`` (strict: every model loaded) until it answers 200."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise TritonServerError(f"tritonserver exited with code {code} before it was ready")
            if self._stub_failed():  # tritonserver would wait for the dead stub until our deadline
                raise TritonServerError("a Python-backend stub exited before its model loaded")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # loopback URL
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise TritonServerError(f"tritonserver was not ready after {timeout_s:.0f}s")

    def _stub_failed(self) -> bool:
        """Whether this start's log shows a stub whose Python could not initialize (read from where
        the last call stopped, less a marker's length in case one was cut)."""
        if self.log_file is None:
            return False
        start = max(self._log_offset, self._log_scanned - max(map(len, _STUB_START_FAILURE)))
        try:
            with open(self.log_file, "rb") as log:
                log.seek(start)
                data = log.read()
        except OSError:
            return False
        self._log_scanned = start + len(data)
        text = data.decode("utf-8", "replace")
        return any(marker in text for marker in _STUB_START_FAILURE)

    def shared_memory_regions(self) -> list[Path]:
        """The shared-memory regions this server's Python-backend stubs hold (or a kill left behind)."""
        if not self.shm_prefix:
            return []
        return sorted(SHARED_MEMORY_DIR.glob(f"{self.shm_prefix}*"))

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_report(self) -> str | None:
        """How a server that was started and never stopped ended — its exit code or the signal that
        killed it, and what it logged last — or ``None`` while it runs (or when it was never
        started). A test that finds its server gone reports this: a CI run keeps only its output."""
        if self._process is None or self._process.poll() is None:
            return None
        code = self._process.returncode
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        return f"tritonserver (pid {self._process.pid}) {how}{self._log_tail(self._start_log())}"

    def send_signal(self, signum: int) -> None:
        if self.is_running():
            assert self._process is not None
            self._process.send_signal(signum)

    def wait(self) -> int:
        """Block until tritonserver exits; returns its exit code."""
        assert self._process is not None
        return self._process.wait()

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout_s`` for in-flight requests, then SIGKILL."""
        code = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    LOG.warning("tritonserver did not stop in %.0fs; killing it", self.stop_timeout_s)
                    self._process.kill()
                    self._process.wait()
            code = self._process.returncode
            kill_process_group(self._process.pid)
            self._process = None
            for region in self.shared_memory_regions():
                region.unlink(missing_ok=True)
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]  # a file opened in start()
            self._log_handle = None
        if self._workdir is not None:
            self._workdir.remove()
            self._workdir = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(server: TritonServer) -> int:
    """Run until tritonserver exits; forward SIGINT/SIGTERM/SIGHUP to it so it drains and stops."""

    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        LOG.info("forwarding signal %d to tritonserver", signum)
        if signum != signal.SIGHUP:
            stopping.set()
        server.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
    try:
        server.start()
    except TritonServerError:
        # Asked to stop while the models were still loading (a deploy rolled back, Ctrl-C at the
        # wrong moment): tritonserver stopped as told, which is no failure of the start.
        if stopping.is_set():
            LOG.info("stopped before every model was ready, as asked")
            return 0
        raise
    try:
        if stopping.is_set():  # the signal came before tritonserver's process existed to take it
            return server.stop() or 0
        return server.wait()
    finally:
        server.stop()
