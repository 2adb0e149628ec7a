"""A headless Chromium driven through chromedriver, for the tests that run pages in a browser.

Selenium is handed the paths of both binaries, so its Selenium Manager never looks for, or
downloads, a browser or a driver: the tests run the Chromium this machine has (`make test`
installs Debian's `chromium` and `chromium-driver` with apt-get when they are missing).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

BROWSER_PACKAGES = "Debian's chromium and chromium-driver"
WINDOW_SIZE = (800, 600)
PAGE_LOAD_TIMEOUT_SECONDS = 15.0
WAIT_TIMEOUT_SECONDS = 10.0
WAIT_POLL_SECONDS = 0.05
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

T = TypeVar("T")


@dataclass(frozen=True)
class BrowserBinaries:
    chromium: str
    chromedriver: str


def find_browser_binaries() -> BrowserBinaries | None:
    """`chromium` and `chromedriver` on PATH (/usr/bin on Debian), or None if either is missing."""
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        return None
    return BrowserBinaries(chromium, chromedriver)


DESKTOP_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


def start_chromium(binaries: BrowserBinaries) -> webdriver.Chrome:
    """A headless Chromium with a fixed small window, keeping every console message.

    `--no-sandbox` because the tests may run as root (in a container); `--disable-dev-shm-usage`
    because a container's /dev/shm is often too small for Chromium. It calls itself a desktop
    Chrome: headless Chromium's own User-Agent (`HeadlessChrome`) is on the crawler list, so the
    service would not count its visits (tests that want a crawler set one per request).
    """
    options = webdriver.ChromeOptions()
    options.binary_location = binaries.chromium
    width, height = WINDOW_SIZE
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-agent={DESKTOP_CHROME}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(binaries.chromedriver))
    try:
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
    except BaseException:
        driver.quit()
        raise
    return driver


def reset_browser(driver: webdriver.Chrome) -> None:
    """Leave nothing of an earlier test: a blank page, no cookies, no cache, an empty console."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    read_console(driver)


@dataclass(frozen=True)
class ConsoleEntry:
    level: str  # SEVERE (console.error, failed loads, uncaught errors), WARNING, INFO, DEBUG
    source: str  # console-api, network, javascript, ...
    message: str


def read_console(driver: webdriver.Chrome) -> list[ConsoleEntry]:
    """The browser console's entries since the last read (reading empties Chromium's buffer)."""
    return [
        ConsoleEntry(entry["level"], entry.get("source", ""), entry["message"])
        for entry in driver.get_log("browser")
    ]


def console_errors(driver: webdriver.Chrome) -> list[ConsoleEntry]:
    """The console's errors since the last read: what a page's author would see in red."""
    return [entry for entry in read_console(driver) if entry.level == "SEVERE"]


def save_screenshot(driver: webdriver.Chrome, path: Path) -> Path:
    """Write what the window shows as a PNG at `path` (its directory made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(driver.get_screenshot_as_png())
    return path


def save_element_screenshot(element: WebElement, path: Path) -> Path:
    """Write what `element` shows (its box, cropped from the window) as a PNG at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(element.screenshot_as_png)
    return path


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header chunk (IHDR, right after the signature)."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def wait_until(
    driver: webdriver.Chrome,
    condition: Callable[[webdriver.Chrome], T],
    what: str,
    timeout: float = WAIT_TIMEOUT_SECONDS,
) -> T:
    """Poll `condition` every 50 ms until it returns something true, and return that; after
    `timeout` seconds, fail saying `what` never happened."""
    waiting: WebDriverWait[webdriver.Chrome] = WebDriverWait(
        driver, timeout, poll_frequency=WAIT_POLL_SECONDS
    )
    return waiting.until(condition, f"{what} (waited {timeout}s)")


def wait_for_console_error(
    driver: webdriver.Chrome, fragment: str, timeout: float = WAIT_TIMEOUT_SECONDS
) -> list[ConsoleEntry]:
    """Read the console until an error holding `fragment` shows; return every error read."""
    errors: list[ConsoleEntry] = []

    def seen(driver: webdriver.Chrome) -> bool:
        errors.extend(console_errors(driver))
        return any(fragment in entry.message for entry in errors)

    wait_until(driver, seen, f"a console error with {fragment!r}", timeout)
    return errors
