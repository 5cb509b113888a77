"""Security defaults: loopback only, no request field names a path, model control closed by default,
and the production setup — gRPC over TLS (self-signed certificate here) with the model-repository,
shared-memory, trace and logging protocols behind an admin header — exercised once."""

from __future__ import annotations

import ast
import ipaddress
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisle import AisleError, PermissionDenied, RecClient, RetryPolicy
from aisle.errors import from_triton
from aisle_export.cli import build_parser
from aisle_server.tritonserver import TritonServer
from perf.lib.procstats import listening_addresses

pytestmark = pytest.mark.integration

SERVER_PKG = Path(__file__).resolve().parents[2] / "server" / "aisle_server"
#: modules that run on every request (after a model's one-time setup)
REQUEST_PATH_MODULES = ["rerank_io.py", "ranking.py", "diversity.py", "triton_adapter.py"]
FILE_APIS = {
    "open",
    "Path",
    "load",
    "save",
    "savez",
    "loadtxt",
    "fromfile",
    "tofile",
    "remove",
    "unlink",
    "rename",
    "rmtree",
    "system",
    "popen",
    "Popen",
    "run",
    "exec",
    "eval",
    "__import__",
    "import_module",
}
ADMIN = {"triton-grpc-protocol-aisle-admin": "let-me-in"}
PRODUCTION_FLAGS = [
    "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:aisle-admin=let-me-in",
    "--http-restricted-api=model-repository,shared-memory,trace,logging:aisle-admin=let-me-in",
]


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback)


def test_binds_loopback_only_by_default(server):
    addresses = listening_addresses(server.pid)
    assert {port for _, port in addresses} >= {server.grpc_port, server.http_port, server.metrics_port}
    assert all(_loopback(address) for address, _ in addresses), addresses
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_model_control_is_closed_by_default(server, raw):
    """Triton's repository API can load a model from files sent in the request: off unless asked for."""
    for attempt in (
        lambda: raw.load_model("rerank"),
        lambda: raw.unload_model("rerank"),
        lambda: raw.load_model(
            "evil", config='{"backend": "python"}', files={"file:1/model.py": b"import os; os.system('touch /tmp/x')"}
        ),
    ):
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            attempt()
    request = urllib.request.Request(f"{server.http_url}/v2/repository/models/rerank/unload", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10)  # loopback
    assert raw.is_model_ready("rerank")


def test_request_paths_are_data_not_paths(client, raw, tmp_path):
    canary = tmp_path / "secret.txt"
    canary.write_text("CANARY-7f3a")
    target = tmp_path / "written-by-server"
    paths = [str(canary), str(target), "../../../../etc/passwd", "file://" + str(canary), "/proc/self/environ"]
    for path in paths:
        recs = client.recommend(
            query=path, history=[(path, 1.7e9)], k=5, exclude_ids=[path], deny_categories=[path], cache=False
        )
        assert all("CANARY" not in r.item_id for r in recs)
        for knob in ({"diversity_method": path}, {"search_mode": path}):
            with pytest.raises(AisleError):
                client.recommend(query="x", k=3, cache=False, **knob)
    # the same strings raw, into the tensors the SDK would check first
    for name in ("DIVERSITY_METHOD", "SEARCH_MODE"):
        inputs = []
        for tensor_name, value in (("QUERY", str(canary)), (name, str(canary))):
            tensor = grpcclient.InferInput(tensor_name, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=object))
            inputs.append(tensor)
        with pytest.raises(InferenceServerException, match=r"INVALID|must be|one of"):
            raw.infer("recommend", inputs)
    assert not target.exists() and not Path("/tmp/aisle-fuzz-pwned").exists()


def test_request_path_code_has_no_file_access():
    """Static check: the per-request modules call no file, process or dynamic-import API."""
    for module in REQUEST_PATH_MODULES:
        tree = ast.parse((SERVER_PKG / module).read_text())
        calls = {
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
        }
        imports = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not calls & FILE_APIS, (module, calls & FILE_APIS)
        assert not imports & {"os", "subprocess", "shutil", "pickle", "pathlib", "importlib"}, (module, imports)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_production_setup_tls_and_restricted_admin(repo, tmp_path):
    cert, key = _self_signed(tmp_path)
    tls = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}", f"--grpc-root-cert={cert}"]
    server = TritonServer(
        repo,
        model_control_mode="explicit",
        log_file=tmp_path / "tritonserver.log",
        extra_args=["--load-model=*", *tls, *PRODUCTION_FLAGS],
    )
    with server:
        with RecClient(server.grpc_url, timeout_s=30, ssl=True, root_certificates=str(cert)) as client:
            assert len(client.recommend("star wars", k=3)) == 3
        with RecClient(server.grpc_url, timeout_s=3, retry=RetryPolicy(max_attempts=1)) as plaintext:
            with pytest.raises(AisleError):  # no TLS: the handshake fails, nothing is served
                plaintext.recommend("star wars", k=3)

        admin = grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(cert))
        try:
            with pytest.raises(InferenceServerException) as refused:
                admin.load_model("rerank")  # model control without the admin header
            assert isinstance(from_triton(refused.value), PermissionDenied)
            with pytest.raises(InferenceServerException, match="protocol is restricted"):
                admin.register_system_shared_memory("region", "/some_key", 64)
            admin.load_model("rerank", headers=ADMIN)  # the operator's `aisle catalog load --header ...`
            assert admin.is_model_ready("rerank") and admin.is_model_ready("recommend")
        finally:
            admin.close()
