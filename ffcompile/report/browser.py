"""Open reports in headless Chromium: Debian's `chromium` and `chromium-driver` driven by
selenium (the `report` extra). Nothing is downloaded: no browser, no driver, no page asset.
The tests (tests/test_report_browser.py) and the measurements (benchmarks/report.py) use it."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def missing() -> str | None:
    """Why no headless Chromium can be driven here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install '.[report]')"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "no Chromium: apt-get install -y chromium chromium-driver"
    return None


@contextmanager
def headless_chromium(width: int = 1500, height: int = 1000):
    """A selenium WebDriver on a fresh profile that keeps the browser console's messages."""
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ffcompile-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_report(driver, path) -> float:
    """Load a report; return the milliseconds from navigation to the end of its script
    (parse, data, the graph drawn). Console messages of earlier pages are dropped, so
    console_errors then reports this page's."""
    driver.get_log("browser")
    driver.get(f"file://{path}")
    ready = driver.execute_script("return window.ffReportReady")
    if not isinstance(ready, (int, float)):
        raise RuntimeError(f"{path}: the report's script did not finish")
    return float(ready)


def console_errors(driver) -> list[dict]:
    """The browser console's errors since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
