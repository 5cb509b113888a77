"""A new user's path with a catalog of their own: ``aisle index`` into a copy, ``aisle serve``, search, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aisle_cli
import pytest

from aisle import InvalidRequest, RecClient, ServerUnavailable
from aisle_server.tritonserver import free_ports

pytestmark = pytest.mark.integration


PRODUCTS = [
    ("sku-001", "Trail Running Shoes - Men's, Red", "Lightweight trail runner with grippy outsole", "Footwear"),
    ("sku-002", "Leather Office Chair", "Ergonomic high-back chair with lumbar support", "Furniture"),
    ("sku-003", "Stainless Steel Water Bottle 1L", "Double-wall insulated, keeps drinks cold 24h", "Kitchen"),
    ("sku-004", "Wireless Noise Cancelling Headphones", "Over-ear, 30 hour battery", "Electronics"),
    ("sku-005", "Organic Basmati Rice 5kg", "Aged long-grain rice", "Grocery"),
    ("sku-006", "Yoga Mat 6mm", "Non-slip exercise mat with carry strap", "Sports"),
    ("sku-007", "USB-C Charger 65W", "GaN fast charger for laptops and phones", "Electronics"),
    ("sku-008", "Cast Iron Skillet 12 inch", "Pre-seasoned frying pan", "Kitchen"),
    ("sku-009", "Kids Waterproof Winter Jacket", "Insulated hooded coat, ages 6-7", "Apparel"),
    ("sku-010", "Dark Roast Coffee Beans 1kg", "Whole bean, single origin", "Grocery"),
    ("sku-011", "Garden Hose 25m", "Kink-free with spray nozzle", "Garden"),
    ("sku-012", "Mechanical Keyboard, Brown Switches", "Tenkeyless, backlit", "Electronics"),
]


@pytest.fixture(scope="module")
def own_catalog(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("own") / "products.jsonl"
    with path.open("w") as handle:
        for n, (item_id, title, description, category) in enumerate(PRODUCTS):
            row = {
                "item_id": item_id,
                "title": title,
                "description": description,
                "category": category,
                "created_at": f"2026-0{1 + n % 9}-15T10:00:00Z",
                "popularity": n,
                "in_stock": item_id != "sku-010",
            }
            handle.write(json.dumps(row) + "\n")
        handle.write(json.dumps({"item_id": "", "title": "no id"}) + "\n")  # line 13: malformed
    return path


def test_index_and_serve_a_second_catalog_with_the_cli(exported_repo, own_catalog, tmp_path):
    repo = tmp_path / "my_repository"
    shutil.copytree(exported_repo, repo)

    strict = aisle_cli.run("index", "--catalog", str(own_catalog), "--repo", str(repo))
    assert strict.returncode == 1
    assert "line 13" in strict.stderr and "item_id" in strict.stderr

    too_small = aisle_cli.run(
        "index",
        "--catalog",
        str(own_catalog),
        "--repo",
        str(repo),
        "--skip-bad-rows",
        "--ann",
        "on",
        "--ann-kind",
        "ivf_pq",
    )
    assert too_small.returncode == 1 and "ivf_pq needs at least 256 items" in too_small.stderr, too_small.stderr

    # served below through a (forced) IVF index that probes 3 of its 12 lists: what the lists
    # miss, the exact scan behind it answers, so search results stay exact
    lenient = aisle_cli.run(
        "index",
        "--catalog",
        str(own_catalog),
        "--repo",
        str(repo),
        "--skip-bad-rows",
        "--ann",
        "on",
        "--ann-nprobe",
        "3",
    )
    assert lenient.returncode == 0, lenient.stderr
    assert "skipped 1 bad rows" in lenient.stderr
    assert json.loads(lenient.stdout.strip().splitlines()[-1])["indexed"] == len(PRODUCTS)
    assert json.loads((repo / "rerank" / "1" / "index" / "ann.json").read_text()) == {
        "kind": "ivf_fp16",
        "nprobe": 3,
        "refine": 0,
    }

    grpc_port, http_port, metrics_port = free_ports(3)  # one call: three distinct ports
    venv = Path(sys.prefix)  # served as a new user would: `source .venv/bin/activate && aisle serve`
    activated = {
        **os.environ,
        "VIRTUAL_ENV": str(venv),
        "PATH": os.pathsep.join([str(venv / "bin"), os.environ["PATH"]]),
    }
    serve = subprocess.Popen(
        [
            "aisle",
            "serve",
            "--repo",
            str(repo),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=activated,
    )
    try:
        with RecClient(f"127.0.0.1:{grpc_port}", timeout_s=20) as client:
            _wait_served(client, serve, timeout_s=120)
            for item_id, title, _, _ in PRODUCTS:
                recs = client.recommend(query=title, k=3)
                if item_id == "sku-010":  # out of stock: never recommended
                    assert item_id not in {r.item_id for r in recs}
                else:
                    assert recs[0].item_id == item_id, (title, recs)
            assert client.recommend(query="headphones for a flight", k=1)[0].item_id == "sku-004"
            assert len(client.recommend(query="anything", k=len(PRODUCTS))) == len(PRODUCTS) - 1
            with pytest.raises(InvalidRequest, match=f"catalog has {len(PRODUCTS)} items"):
                client.recommend(query="anything", k=len(PRODUCTS) + 1)
    finally:
        serve.send_signal(signal.SIGINT)
        output = serve.communicate(timeout=60)[0].decode(errors="replace")
    assert serve.returncode == 0, output[-2000:]
    assert f"tritonserver log: {tmp_path / 'tritonserver.log'}" in output
    assert "Waiting for in-flight requests to complete" in (tmp_path / "tritonserver.log").read_text()


def _wait_served(client: RecClient, serve: subprocess.Popen, timeout_s: float) -> None:
    """Wait until the server is ready; if ``aisle serve`` exits first, fail at once with what it said."""
    deadline = time.monotonic() + timeout_s
    while True:
        if serve.poll() is not None:
            output = serve.communicate()[0].decode(errors="replace")
            pytest.fail(f"aisle serve exited with {serve.returncode} before it was ready:\n{output[-3000:]}")
        try:
            client.wait_ready(timeout_s=min(5.0, max(deadline - time.monotonic(), 0.1)))
            return
        except ServerUnavailable:
            if time.monotonic() >= deadline:
                raise
