"""The screenshots of ``aisle console`` in docs/console.md, taken in Debian's headless Chromium.

    .venv/bin/python -m perf.console_screenshots [--repo DIR] [--out docs/console]

Serves a copy of the benchmarks' repository (``perf.lib.repository.cached``: pretrained towers,
MovieLens-100K; or ``--repo``) with synthetic item attributes (``price``, ``brand``, ``tags``: made up
for the pictures) beside its index, a redis-server of its own as the state store, three rules, a
shopper's events and two live price changes (all through the SDK, as a store would), and the
simulated A/B experiment's report (``perf/results/sim_experiments``) as the reports directory. Then
opens the console and saves one PNG per panel in ``--out``: ``search.png`` (a search with an
explanation open), ``dry_run.png`` (a proposed rule's before and after), ``state.png`` (events and
live changes), ``reports.png``. Everything it starts stops when it ends.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from perf.lib.repository import DATA, ROOT, cached, movielens_catalog

RULES = {
    "rules": [
        {"id": "house-brand", "effect": "boost", "match": "brand == 'acme'", "add": 0.05},
        {"id": "no-clearance", "effect": "filter", "match": "'clearance' in tags", "action": "drop"},
        {"id": "hero", "when": "surface == 'home' and not has_query", "effect": "pin", "item": "50", "position": 1},
    ]
}
PROPOSED = {
    "rules": [
        *RULES["rules"],
        {"id": "under-10", "effect": "boost", "match": "price < 10", "add": 0.08},
    ]
}


def attributes_of(item_id: str) -> dict[str, object]:
    number = int(item_id)
    return {
        "price": float(number % 40) + 0.99,
        "brand": "acme" if number % 3 == 0 else "other",
        "tags": ["clearance"] if number % 17 == 0 else ["regular"],
    }


def with_attributes(repo: Path, served: Path) -> Path:
    """A copy of ``repo`` whose newest index carries the synthetic attributes."""
    from aisle_server.attributes import Attributes
    from aisle_server.index import INDEX_DIRNAME, ITEMS_DIRNAME, CatalogIndex, rerank_versions

    shutil.copytree(repo, served, ignore=shutil.ignore_patterns("__pycache__"))
    directory = served / "rerank" / str(rerank_versions(served)[-1]) / INDEX_DIRNAME
    index = CatalogIndex.load(directory, searchable=False)
    schema = {"price": "number", "brand": "string", "tags": "string_list"}
    Attributes.of(schema, [attributes_of(i) for i in index.item_ids.tolist()]).save(directory / ITEMS_DIRNAME)
    return served


def seed(url: str) -> None:
    """Rules, a shopper's events and live price changes, through the SDK."""
    from aisle import RecClient

    with RecClient(url, timeout_s=30) as client:
        client.set_rules(json.dumps(RULES))
        now = time.time()
        for i, (item, kind) in enumerate([("172", "view"), ("181", "click"), ("50", "view"), ("1", "purchase")]):
            client.track("shopper-42", item, kind, ts=now - 300 + 60 * i)
        client.update_items([{"item_id": "82", "price": 4.99}, {"item_id": "121", "price": 7.5, "tags": ["sale"]}])
    time.sleep(1.0)  # every rerank instance reads the rules and the changes within its poll (0.2 s)


def shoot(console_url: str, out: Path) -> list[Path]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from perf.lib.browser import chromium

    def wait(css: str, n: int = 1) -> list:
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= n)
        return driver.find_elements(By.CSS_SELECTOR, css)

    def save(element_id: str, name: str) -> Path:
        path, element = out / name, driver.find_element(By.ID, element_id)
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)  # whole, not cut at the fold
        path.write_bytes(element.screenshot_as_png)
        return path

    driver = chromium(1280, 1200)
    try:
        driver.get(console_url)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        driver.find_element(By.ID, "query").send_keys("space adventure")
        driver.find_element(By.ID, "user-id").send_keys("shopper-42")
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("8")
        driver.find_element(By.ID, "search").click()
        results = wait("#results li.result", 8)
        for row in results[:2]:
            row.find_element(By.CSS_SELECTOR, "button.why").click()
        wait("#results .explanation", 2)
        shots = [save("preview-panel", "search.png")]

        driver.find_element(By.ID, "load-rules").click()
        wait("#rules-table tbody tr", 3)
        draft = driver.find_element(By.ID, "draft")
        draft.clear()
        draft.send_keys('{"rules": [\n' + ",\n".join("  " + json.dumps(r) for r in PROPOSED["rules"]) + "\n]}")
        driver.find_element(By.ID, "dry-run").click()
        wait("#after li", 8)
        shots.append(save("rules-panel", "dry_run.png"))

        driver.find_element(By.ID, "events-user").send_keys("shopper-42")
        driver.find_element(By.ID, "load-events").click()
        driver.find_element(By.ID, "load-changes").click()
        wait("#events-table tbody tr", 4)
        wait("#changes-table tbody tr", 2)
        shots.append(save("state-panel", "state.png"))

        wait("#report img")
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        )
        shots.append(save("reports-panel", "reports.png"))
        return shots
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="an indexed repository of this checkout (default: perf's cached one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = parser.parse_args(argv)

    from aisle_export.ops.console.app import running
    from aisle_export.ops.console.guard import ConsoleSettings
    from aisle_server.redis_server import RedisServer
    from aisle_server.tritonserver import TritonServer

    repo = args.repo or cached()
    catalog = movielens_catalog(DATA)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        served = with_attributes(repo, tmp / "model_repository")
        reports = tmp / "reports" / "sim-experiments"
        reports.mkdir(parents=True)
        for suffix in (".md", ".png"):
            shutil.copy(ROOT / "perf" / "results" / f"sim_experiments{suffix}", reports / f"sim_experiments{suffix}")
        with RedisServer(tmp / "state") as redis:
            with TritonServer(served, state_url=redis.url, log_file=tmp / "tritonserver.log") as triton:
                seed(triton.grpc_url)
                settings = ConsoleSettings(triton.grpc_url, state=redis.url, reports=reports.parent, catalog=catalog)
                with running(settings) as console:
                    for path in shoot(console.url, args.out):
                        print(path, flush=True)


if __name__ == "__main__":
    main()
