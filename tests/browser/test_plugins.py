"""A plugin's whole life in Chromium, with the guestbook shipped with Keel: an admin
uploads its zip, installs and activates it through the confirmation pages; a visitor signs
the guestbook; the admin approves the entry; the visitor sees it; deactivated, the page
answers 404 within 2 s. The server starts with an empty PLUGINS_DIR, so the upload is what
brings the plugin (on the services leg: two web processes, each must follow)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from app.extensions.services.archive import pack_folder
from app.settings import ROOT
from tests.browser.conftest import SCREENSHOTS, LiveServer, serve_keel, sign_in
from tests.conftest import LEGS

pytestmark = pytest.mark.browser

GUESTBOOK = ROOT / "plugins" / "guestbook"
SWITCH_SECONDS = 2.0
"""How soon every process serves an activation or drops a deactivated plugin."""


@pytest.fixture(scope="module", params=LEGS)
def plugin_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: Path,
) -> Iterator[LiveServer]:
    """`keel serve` with an admin account and an empty PLUGINS_DIR of its own."""
    plugins_dir = tmp_path_factory.mktemp("empty-plugins")
    with ExitStack() as stack:
        environment = stack.enter_context(pytest.MonkeyPatch.context())
        environment.setenv("PLUGINS_DIR", str(plugins_dir))
        server = stack.enter_context(
            serve_keel(request.param, tmp_path_factory, "plugins", with_admin=True)
        )
        environment.undo()  # the server has it; nothing else in this process needs it
        yield server


class Person:
    """One browser context (its own cookies) with a page that collects console errors."""

    def __init__(self, browser: Browser) -> None:
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(10_000)
        self.page: Page = self.context.new_page()
        self.console_errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "404" not in message.text:
            self.console_errors.append(f"console error: {message.text}")


@pytest.fixture
def people(browser: Browser, plugin_server: LiveServer) -> Iterator[tuple[Person, Person]]:
    admin, visitor = Person(browser), Person(browser)
    try:
        yield admin, visitor
    finally:
        for person, who in ((admin, "admin"), (visitor, "visitor")):
            try:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                shot = SCREENSHOTS / f"test_plugins-{who}-{plugin_server.leg}.png"
                person.page.screenshot(path=str(shot))
            finally:
                person.context.close()


def status_within(server: LiveServer, path: str, status: int, seconds: float) -> float:
    """Seconds until `path` answers `status` (fails after `seconds`)."""
    began = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while True:
            answered = client.get(path).status_code
            elapsed = time.monotonic() - began
            if answered == status:
                return elapsed
            assert elapsed < seconds, f"{path} answered {answered}, not {status}, for {seconds} s"
            time.sleep(0.05)


def confirm_step(page: Page, server: LiveServer, step: str, done: str) -> None:
    """On /admin/plugins: the guestbook's `step` link, its confirmation page, its button;
    back on the list, the guestbook's status reads `done`."""
    row = page.locator('tr[data-plugin="guestbook"]')
    row.get_by_role("link", name=step, exact=True).click()
    expect(page.locator("h1")).to_have_text(f"{step}: Guestbook?")
    page.locator("main").get_by_role("button", name=step, exact=True).click()
    expect(page).to_have_url(server.url(f"/admin/plugins?notice={step.lower()}-done-guestbook"))
    expect(row.locator(".badge")).to_have_text(done)


def test_an_uploaded_guestbook_is_signed_approved_seen_and_switched_off(
    people: tuple[Person, Person], plugin_server: LiveServer, tmp_path: Path
) -> None:
    admin, visitor = people
    server = plugin_server
    archive = tmp_path / "guestbook.zip"
    archive.write_bytes(pack_folder(GUESTBOOK))
    assert httpx.get(server.url("/p/guestbook/")).status_code == 404  # nothing there yet

    sign_in(admin.page, server)
    admin.page.goto(server.url("/admin/plugins"))
    expect(admin.page.locator(".empty")).to_contain_text("No plugins yet")
    admin.page.set_input_files("#f-file", str(archive))
    admin.page.locator("main").get_by_role("button", name="Upload").click()
    expect(admin.page).to_have_url(server.url("/admin/plugins?notice=uploaded-guestbook"))
    row = admin.page.locator('tr[data-plugin="guestbook"]')
    expect(row.locator(".badge")).to_have_text("Uploaded")
    confirm_step(admin.page, server, "Install", "Installed")
    confirm_step(admin.page, server, "Activate", "Active")
    status_within(server, "/p/guestbook/", 200, SWITCH_SECONDS)

    visitor.page.goto(server.url("/p/guestbook/"))
    expect(visitor.page.locator("h1")).to_have_text("Guestbook")
    expect(visitor.page.locator(".empty")).to_have_text("No entries yet. Be the first to sign!")
    visitor.page.fill("#f-name", "Ada Lovelace")
    visitor.page.fill("#f-message", "What a <b>lovely</b> site.\nSee you soon!")
    visitor.page.get_by_role("button", name="Sign").click()
    expect(visitor.page).to_have_url(server.url("/p/guestbook/?signed=pending"))
    expect(visitor.page.locator(".alert-ok")).to_contain_text("once an editor approves it")
    expect(visitor.page.locator(".guestbook-entry")).to_have_count(0)

    admin.page.goto(server.url("/admin/plugins/guestbook/"))
    pending = admin.page.locator("tr[data-entry]", has_text="Ada Lovelace")
    expect(pending).to_contain_text("What a <b>lovely</b> site.")
    admin.page.screenshot(path="/tmp/guestbook-moderation.png", full_page=True)
    pending.get_by_role("button", name="Approve").click()
    expect(admin.page.locator(".alert-ok")).to_have_text("Entry approved: visitors see it now.")
    expect(admin.page.locator(".empty").first).to_have_text("No entries wait for approval.")

    visitor.page.reload()
    entry = visitor.page.locator(".guestbook-entry")
    expect(entry).to_have_count(1)
    expect(entry.locator(".guestbook-message")).to_have_text(
        "What a <b>lovely</b> site.\nSee you soon!"
    )
    expect(entry).to_contain_text("Ada Lovelace")
    visitor.page.screenshot(path="/tmp/guestbook-public.png", full_page=True)

    admin.page.goto(server.url("/admin/plugins"))
    confirm_step(admin.page, server, "Deactivate", "Inactive")
    status_within(server, "/p/guestbook/", 404, SWITCH_SECONDS)
    gone = visitor.page.goto(server.url("/p/guestbook/"))
    assert gone is not None and gone.status == 404
    assert admin.console_errors == [] and visitor.console_errors == []
