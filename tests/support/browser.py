"""A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, for the dashboard's tests
and its screenshot script. Chromium resolves no host but 127.0.0.1, so a page that fetched anything from outside
would fail to load it (and `outside_requests` lists what it tried).

    with chromium() as driver: driver.get("http://127.0.0.1:PORT/")
"""

from __future__ import annotations

import contextlib
import shutil
from typing import Any, Iterator, List

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def missing() -> str:
    """Why no browser test can run here ('' when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver)"
    return ""


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium window of `width` x `height`, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def outside_requests(driver: Any) -> List[str]:
    """Every resource the current page asked for that is not on 127.0.0.1."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map((entry) => entry.name)")
    return [name for name in names if not name.startswith(("http://127.0.0.1", "data:"))]


def painted_pixels(driver: Any, canvas_id: str) -> int:
    """How many pixels of a canvas are not transparent: 0 for a blank chart."""
    return int(driver.execute_script(
        "const c = document.getElementById(arguments[0]); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) { if (d[i] !== 0) n++; } return n;", canvas_id))
