"""Headless Chromium (Debian's package) driven by Playwright, against a real server of the browser tests' own.

Every page a test opens is watched: a console error, an uncaught exception or a request to another origin
fails the test, unless the test said it expects that console error (`page.expect_console_error`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ADMIN_KEY, Server
from tests.tiny_llm import build_tiny_causal_lm

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
# Every run keeps its screenshots as artifacts in a folder git ignores; the README's pictures in docs/screenshots
# change only when asked (`OPENMAAS_UPDATE_SCREENSHOTS=1 make test`), so a test run leaves the tree clean.
UPDATE_README_PICTURES = os.environ.get("OPENMAAS_UPDATE_SCREENSHOTS") == "1"
SCREENSHOTS = ROOT / ("docs" if UPDATE_README_PICTURES else "test-artifacts") / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHAT_MODEL = "tiny-chat"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)", allow_module_level=True)


@dataclass
class Watch:
    """What went wrong on a page: console errors, uncaught exceptions, requests to other origins."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)  # other origins' URLs a test expects the page's policy to block
    dialogs: list[str] = field(default_factory=list)

    def console(self, message: sync_api.ConsoleMessage) -> None:
        if message.type != "error":
            return
        for i, wanted in enumerate(self.expected):
            if wanted in message.text or wanted in (message.location or {}).get("url", ""):
                del self.expected[i]  # each expected error excuses one message
                return
        self.errors.append(f"{message.text} at {message.location}")

    def request(self, request: sync_api.Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin and request.url not in self.blocked:
            self.foreign.append(request.url)


class Dashboard:
    """One signed-out tab on the dashboard, watched, that saves screenshots by name."""

    def __init__(self, page: sync_api.Page, server: Server, watch: Watch) -> None:
        self.page = page
        self.server = server
        self.watch = watch

    def expect_console_error(self, text: str) -> None:
        """The next console error containing `text` (the browser logs a failed request's status) is wanted."""
        self.watch.expected.append(text)

    def expect_blocked(self, url: str) -> None:
        """A third-party bundle that asks for `url`, which the page's Content-Security-Policy must refuse (the
        browser logs the refusal as a console error)."""
        self.watch.blocked.add(url)
        self.expect_console_error(f"Loading the image '{url}' violates the following Content Security Policy")

    def sign_in(self, key: str) -> None:
        self.page.goto(self.server.url + "/")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#account").wait_for(state="visible")

    def go(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Pages").get_by_role("link", name=name, exact=True).click()
        self.page.get_by_role("heading", name=name, level=2).wait_for()

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture(scope="module")
def dash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The browser tests' own server, with a tiny chat model imported: their screenshots show only their things."""
    server = Server(tmp_path_factory.mktemp("dashboard-server")).start()
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-chat") / "model")
    with server.http() as http:
        answer = http.post("/v1/models/import", json={"path": str(directory), "name": CHAT_MODEL})
        assert answer.status_code == 201, answer.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def dashboard(browser: sync_api.Browser, dash_server: Server) -> Iterator[Dashboard]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    watch = Watch(dash_server.url)
    page.on("console", watch.console)
    page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
    page.on("request", watch.request)

    def accept(dialog: sync_api.Dialog) -> None:
        watch.dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield Dashboard(page, dash_server, watch)
    context.close()
    assert not watch.errors, f"console errors: {watch.errors}"
    assert not watch.foreign, f"requests to other origins: {watch.foreign}"


__all__ = ["ADMIN_KEY", "CHAT_MODEL", "Dashboard"]
