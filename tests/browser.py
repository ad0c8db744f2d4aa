"""A real browser for tests: Debian's headless Chromium, driven by Selenium.

Selenium's calls block (they are HTTP requests to chromedriver), and the daemon under test
runs in the test's own trio loop, so every call runs in a worker thread: the daemon keeps
serving the browser meanwhile. Waiting is Selenium's `WebDriverWait` — polling the page with a
bound — never a sleep.

`chrome()` starts one browser (a test module shares it: a start costs about two seconds). When
the browser is missing, `browser_or_skip()` skips the test — except under `CI=true`, where it
fails: CI must never pass by not running these (`make test` installs the packages as root).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (and the dev extra: selenium)"
WINDOW = (1280, 900)


def missing() -> str | None:
    """What is missing to run a real browser, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the PyPI package selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing"
    return None


def browser_or_skip() -> None:
    """Skip the test when there is no browser; fail instead under CI=true."""
    problem = missing()
    if problem is None:
        return
    message = f"no real browser: {problem}; install it: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chrome() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, quit (and its profile removed) at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tfward-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """One daemon's pages in the shared browser; every call in a worker thread."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base = base_url.rstrip("/")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(functools.partial(fn, *args))

    async def forget(self) -> None:
        """Drop every cookie (a session of an earlier test's daemon on the same host)."""
        await self._run(self.driver.execute_cdp_cmd, "Network.clearBrowserCookies", {})

    async def get(self, path: str) -> None:
        await self._run(self.driver.get, self.base + path)

    async def path(self) -> str:
        url: str = await self._run(lambda: self.driver.current_url)
        return url.removeprefix(self.base)

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        def read(driver: Any) -> tuple[str]:
            return (str(driver.find_element(By.CSS_SELECTOR, css).text),)

        (found,) = await self._run(self._waiter(10).until, read)
        return str(found)

    async def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return int(await self._run(lambda: len(self.driver.find_elements(By.CSS_SELECTOR, css))))

    async def visible(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        def shown(driver: Any) -> tuple[bool]:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return (bool(found) and bool(found[0].is_displayed()),)

        (answer,) = await self._run(self._waiter(10).until, shown)
        return bool(answer)

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        def do() -> None:
            field = self.driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(text)

        await self._run(do)

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        def press(driver: Any) -> bool:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True

        await self._run(self._waiter(10).until, press)

    async def script(self, source: str, *args: Any) -> Any:
        """Run an async script in the page (its last argument is the callback)."""
        return await self._run(self.driver.execute_async_script, source, *args)

    async def wait_for(self, css: str, pattern: str, timeout: float = 60) -> str:
        """Until the element's text matches `pattern` (a regular expression); its text."""
        from selenium.webdriver.common.by import By

        def matched(driver: Any) -> str | bool:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            text = found[0].text if found else ""
            return text if re.search(pattern, text) else False

        return str(await self._run(self._waiter(timeout).until, matched))

    def _waiter(self, timeout: float) -> Any:
        """Selenium's bounded polling; an element the page's script replaced meanwhile (a live
        part swapped in) is looked up again at the next poll."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(
            self.driver, timeout, 0.1, ignored_exceptions=(StaleElementReferenceException,)
        )

    async def wait_path(self, prefix: str, timeout: float = 30) -> str:
        from selenium.webdriver.support.ui import WebDriverWait

        def there(driver: Any) -> str | bool:
            path = driver.current_url.removeprefix(self.base)
            return path if path.startswith(prefix) else False

        return str(await self._run(WebDriverWait(self.driver, timeout, 0.1).until, there))

    async def alert_open(self) -> bool:
        from selenium.common.exceptions import NoAlertPresentException

        def probe() -> bool:
            try:
                self.driver.switch_to.alert.dismiss()
            except NoAlertPresentException:
                return False
            return True

        return bool(await self._run(probe))

    async def screenshot(self, path: Path) -> None:
        """The whole page as a PNG: the window grows to the page's height for it."""

        def take() -> None:
            height = int(self.driver.execute_script("return document.body.scrollHeight"))
            inner = int(self.driver.execute_script("return window.innerHeight"))
            self.driver.set_window_size(WINDOW[0], WINDOW[1] + max(0, height - inner))
            try:
                self.driver.save_screenshot(str(path))
            finally:
                self.driver.set_window_size(*WINDOW)

        await self._run(take)

    async def sign_in(self, token: str) -> None:
        """Through the sign-in form, as a person would; ends on the page it led to."""
        from selenium.webdriver.support.ui import WebDriverWait

        if not (await self.path()).startswith("/login"):
            await self.get("/login")
        await self.type("#token", token)
        await self.click("#sign-in")

        def answered(driver: Any) -> bool:
            left = not driver.current_url.removeprefix(self.base).startswith("/login")
            return left or bool(driver.find_elements("css selector", "#login-error"))

        await self._run(WebDriverWait(self.driver, 30, 0.1).until, answered)
        if (await self.path()).startswith("/login"):
            raise AssertionError("signing in failed: " + await self.text("main"))
