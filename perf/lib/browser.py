"""Debian's headless Chromium, driven by Selenium: the console's browser test and its docs screenshots.

The browser and its driver are Debian's packages (``make system-deps``: chromium, chromium-driver),
named by path, so selenium-manager is never asked for anything and nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chromium(width: int = 1280, height: int = 1600) -> Any:
    """A headless ``selenium.webdriver.Chrome`` on Debian's chromium; quit it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} missing: `make system-deps` installs Debian's chromium and chromium-driver"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
