"""``aisle console`` in Debian's headless Chromium against the session's real tritonserver and a real
redis-server: a search, an explanation drawn as bars, a dry run of a pin rule (before/after lists), a
shopper's events, live catalog changes and an experiment report with its plot.

Screenshots are checked for what matters, not only status codes: the explanation's element screenshot
is decoded (Pillow, numpy) and must hold a bar of the positive-part colour with a real width. They are
saved under the test's tmp directory (the path is printed). The console reads this module's Redis
directly; the session server has no state store, so the rules panel's dry run (a request knob: nothing
stored) is what this test drives, and stored rules are covered by tests/integration/test_rules.py.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from aisle_export.ops.console.app import running
from aisle_export.ops.console.guard import ConsoleSettings
from aisle_server.live_catalog import CatalogChanges, Change
from aisle_server.state import Event, ShopperState
from perf.lib.browser import chromium

pytestmark = pytest.mark.integration

POSITIVE_BAR = np.array([0x2F, 0x6F, 0xDF])  # console.css .bar.pos


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def stored(redis_server):
    """A shopper's events and two live catalog changes, written with the server's own writers."""
    state = ShopperState(redis_server.url)
    now = time.time()
    state.store(
        [
            Event(f"e{i}", "shopper-1", item, kind, now - 60 * (3 - i))
            for i, (item, kind) in enumerate([("50", "view"), ("181", "click"), ("172", "purchase")])
        ]
    )
    changes = CatalogChanges(state.redis, state.spec)
    changes.append(
        [Change("50", "upsert", {"popularity": 999.0}), Change("9999", "upsert", {"description": "new kettle"})],
        [{"popularity": 999.0}, {"description": "new kettle"}],
    )
    return redis_server.url


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """An experiment report as ``aisle experiment report --out`` lays it out (report.md beside report.png)."""
    out = tmp_path_factory.mktemp("reports") / "home-feed"
    out.mkdir()
    (out / "report.md").write_text(
        "# Experiment home-feed\n\n| arm | ctr |\n|---|---|\n| control | 0.041 |\n| mmr | 0.047 |\n"
    )
    Image.fromarray(np.full((60, 120, 3), 200, dtype=np.uint8)).save(out / "report.png")
    return out.parent


def wait_for(driver, css: str, n: int = 1, timeout: float = 30.0) -> list:
    WebDriverWait(driver, timeout).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= n)
    return driver.find_elements(By.CSS_SELECTOR, css)


def ids(driver, css: str) -> list[str]:
    return [node.get_attribute("data-item") for node in driver.find_elements(By.CSS_SELECTOR, css)]


def colour_pixels(png: bytes, colour: np.ndarray) -> np.ndarray:
    """Columns of the image holding ``colour`` (within a little antialiasing)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return np.abs(pixels - colour).max(axis=2) <= 12


def test_the_console_searches_explains_and_dry_runs_a_rule_in_a_real_browser(
    server, movielens_catalog, stored, report_dir, browser, tmp_path
):
    settings = ConsoleSettings(server.grpc_url, state=stored, reports=report_dir, catalog=movielens_catalog)
    with running(settings) as console:
        browser.get(console.url)
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert browser.find_element(By.ID, "mode").text == "read-only"
        assert not browser.find_element(By.ID, "set-rules").is_enabled()

        # a search, and the first result's explanation as bars
        browser.find_element(By.ID, "query").send_keys("toy story")
        browser.find_element(By.ID, "search").click()
        results = wait_for(browser, "#results li.result", 10)
        before = ids(browser, "#results li.result")
        assert "Toy Story" in results[0].find_element(By.CSS_SELECTOR, ".title").text
        results[0].find_element(By.CSS_SELECTOR, "button.why").click()
        box = wait_for(browser, "#results .explanation")[0]
        names = [row.get_attribute("data-name") for row in box.find_elements(By.CSS_SELECTOR, ".bar-row")]
        assert "dense" in names, names
        bar = box.find_element(By.CSS_SELECTOR, ".bar-row[data-name=dense] .bar.pos")
        assert bar.size["width"] > 5, "the biggest part's bar is drawn wide"
        shot = box.screenshot_as_png
        (tmp_path / "explanation.png").write_bytes(shot)
        blue = colour_pixels(shot, POSITIVE_BAR)
        assert blue.sum() > 50 and blue.any(axis=0).sum() > 5, "a positive bar is visible in the screenshot"

        # a dry run: pin the fifth result to the top; the stored rules (none) stay as they were
        pinned = before[4]
        draft = browser.find_element(By.ID, "draft")
        draft.clear()
        draft.send_keys(json.dumps({"rules": [{"id": "hero", "effect": "pin", "item": pinned, "position": 1}]}))
        browser.find_element(By.ID, "dry-run").click()
        wait_for(browser, "#after li", len(before))
        assert ids(browser, "#before li") == before
        after = ids(browser, "#after li")
        assert after[0] == pinned and after[1:5] == before[:4], after
        first = browser.find_element(By.CSS_SELECTOR, "#after li:first-child")
        assert "▲4" in first.text and "hero: pin @1" in first.text
        (tmp_path / "dry_run.png").write_bytes(browser.find_element(By.ID, "rules-panel").screenshot_as_png)

        # a malformed draft: the field is named, the console stays up
        draft.clear()
        draft.send_keys('{"rules": [{"id": "m", "effect": "filter", "match": "margin > 1"}]}')
        browser.find_element(By.ID, "dry-run").click()
        error = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "dry-run-error")))
        assert "unknown name 'margin'" in error.text and "[draft]" in error.text
        assert not browser.find_element(By.ID, "dry-run-result").is_displayed()

        # the shopper's events and the live catalog changes, read from the state store
        browser.find_element(By.ID, "events-user").send_keys("shopper-1")
        browser.find_element(By.ID, "load-events").click()
        rows = wait_for(browser, "#events-table tbody tr", 3)
        assert [r.text.split()[-2:] for r in rows] == [["purchase", "172"], ["click", "181"], ["view", "50"]]
        browser.find_element(By.ID, "load-changes").click()
        rows = wait_for(browser, "#changes-table tbody tr", 2)
        assert [r.text.split()[2] for r in rows] == ["9999", "50"]

        # the experiment report, its table rendered and its plot loaded
        wait_for(browser, "#report table")
        image = wait_for(browser, "#report img")[0]
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 120
        page = browser.get_screenshot_as_png()
        (tmp_path / "console.png").write_bytes(page)
        assert Image.open(io.BytesIO(page)).size[0] >= 1200
        assert browser.execute_script("return fetch('/api/info').then(r => r.status)") == 200
    print(f"console screenshots: {tmp_path}")
