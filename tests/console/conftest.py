"""Fixtures of the console's browser tests: Debian's Chromium, headless, driven through chromium-driver
by Selenium, with a screenshot of each step written under the test's temp dir when it fails; the
sandbox and the worker come from the command tests' fixtures."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.commands.conftest import connector_env, start_sandbox, worker_port  # noqa: F401  (fixtures)

class Browser:
    """One page of headless Chromium; `step` names what the page shows now (its screenshot is kept)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.steps: list[tuple[str, bytes]] = []

    def open(self, url: str) -> None:
        self.driver.get(url)

    def step(self, name: str) -> None:
        self.steps.append((name, self.driver.get_screenshot_as_png()))

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def click(self, css: str, what: str) -> None:
        """Click the element matching `css` once it is there and enabled (the page re-renders as things change)."""
        self.wait_for(lambda: (element := self.find(css)).is_enabled() and element.click() is None, what)

    def text(self, css: str) -> str:
        """The text of the first element matching `css`, "" when there is none."""
        found = self.driver.find_elements("css selector", css)
        return found[0].text if found else ""

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """Wait until `condition()` is truthy (exceptions count as not yet); fail saying `what` was awaited."""
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(driver: Any) -> Any:
            try:
                return condition()
            except (WebDriverException, LookupError):
                return False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(check)
        except TimeoutException:
            pytest.fail(f"the console did not show {what} within {timeout}s; notice: {self.text('#notice')!r}")

    def save(self, directory: Path) -> None:
        """Write the screenshot of each step, and of the page as it is now, into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for n, (name, png) in enumerate([*self.steps, ("at-failure", self.driver.get_screenshot_as_png())], 1):
            (directory / f"{n:02d}-{name}.png").write_bytes(png)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """When a test with a browser fails, write its screenshots and name where in the report."""
    report = yield
    browser = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and isinstance(browser, Browser):
        directory = item.funcargs["tmp_path"] / "screenshots"
        browser.save(directory)
        report.sections.append(("screenshots", f"a screenshot of each step: {directory}"))
    return report


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver; fails (never skips) when `make tools` could not install them."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: run devstack/tools/browser.sh (make tools)")
    return browser, driver


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium at 1280x800; on failure the screenshots go to <tmp_path>/screenshots/."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800", "--lang=en-GB"):
        options.add_argument(argument)
    service = Service(chromium[1], log_output=str(tmp_path / "chromedriver.log"))
    browser = Browser(webdriver.Chrome(service=service, options=options))
    yield browser
    browser.driver.quit()
