"""Headless Chromium through Playwright, against pytest-django's live server.

Debian's /usr/bin/chromium is used as is: Playwright never downloads a browser. Screenshots go
to tests/screenshots/ (not committed) so a developer can open and look at them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
# browser steps are ordinary synchronous code, so Django's async-safety guard is lifted here only.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def login(page):
    """Log in through the real login form: login(user, password)."""

    def do_login(username: str, password: str) -> None:
        page.goto("/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("main button[type=submit]")
        page.wait_for_load_state("networkidle")

    return do_login


@pytest.fixture
def screenshot(page):
    """screenshot("name") saves tests/screenshots/name.png of the whole page and returns its path."""

    def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def wait_until(page):
    """wait_until(expression, arg) polls a JavaScript expression until it is true.

    page.wait_for_function compiles its predicate with eval, which the app's Content-Security-Policy
    (script-src 'self', no 'unsafe-eval') refuses once it polls; page.evaluate is not affected.
    """

    def wait(expression: str, arg=None, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not page.evaluate(expression, arg):
            if time.monotonic() > deadline:
                raise AssertionError(f"Still false after {timeout:g} s: {expression}")
            page.wait_for_timeout(100)

    return wait
