"""The link check in Chromium: installed from its folder with `keel plugins`, the admin
presses Check now, the run (the server's in-process worker, or a `keel worker` on the
services leg) finds the broken links of the published entries on a local web site, and
the dashboard's widget, loaded by htmx on its own, shows the count. Screenshots of both
pages at 1280 and 390 px wide are left in test-artifacts/screenshots/."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from app.settings import ROOT
from tests.browser.conftest import (
    SCREENSHOTS,
    LiveServer,
    keel_worker,
    serve_keel,
    sign_in,
    watched_page,
)
from tests.conftest import LEGS, PASSWORD, run_keel
from tests.extensions.test_linkcheck import QuietServer, Site

pytestmark = pytest.mark.browser

LINKCHECK = ROOT / "plugins" / "linkcheck"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=LEGS)
def linkcheck_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: Path,
    web: str,
) -> Iterator[LiveServer]:
    """`keel serve` with the link check installed and active, a worker, and two published
    entries linking to the local web site."""
    plugins_dir = tmp_path_factory.mktemp("linkcheck-plugins")
    shutil.copytree(LINKCHECK, plugins_dir / "linkcheck")
    with ExitStack() as stack:
        environment = stack.enter_context(pytest.MonkeyPatch.context())
        environment.setenv("PLUGINS_DIR", str(plugins_dir))
        server = stack.enter_context(
            serve_keel(request.param, tmp_path_factory, "linkcheck", with_admin=True)
        )
        environment.undo()
        env = {**server.env, "PLUGINS_DIR": str(plugins_dir)}
        for step in ("install", "activate"):
            done = run_keel("plugins", step, "linkcheck", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
        if server.leg == "services":
            stack.enter_context(keel_worker(env, server))
        publish(server, web)
        yield server


@pytest.fixture
def page(browser: Browser, linkcheck_server: LiveServer) -> Iterator[Page]:
    """A fresh page on the link check's server (not the session's other one), with the
    console errors and page errors it saw in `page.console_errors`."""
    with watched_page(browser) as fresh:
        yield fresh


def publish(server: LiveServer, web: str) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        token = client.post(
            "/api/v1/auth/login", json={"login": "admin", "password": PASSWORD}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        for kind, title, body in (
            (
                "post",
                "Spring news",
                f"Read [the guide]({web}/ok), [the old guide]({web}/missing), "
                f"[the forum]({web}/error) and [the archive]({web}/moved). "
                "Our [about page](/about) and ![logo](/img.png).",
            ),
            ("page", "About", f"Write to [us](mailto:us@example.org) or see [prices]({web}/slow)."),
        ):
            created = client.post(
                "/api/v1/content", json={"kind": kind, "title": title, "body_markdown": body}
            )
            assert created.status_code == 201, created.text
            published = client.post(f"/api/v1/content/{created.json()['id']}/publish")
            assert published.status_code == 200, published.text


def shoot(page: Page, name: str, leg: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(
            path=str(SCREENSHOTS / f"linkcheck-{name}-{width}-{leg}.png"), full_page=True
        )
    page.set_viewport_size({"width": 1280, "height": 900})


def test_check_now_finds_the_broken_links_and_the_widget_shows_them(
    page: Page, linkcheck_server: LiveServer
) -> None:
    server = linkcheck_server
    sign_in(page, server)
    page.goto(server.url("/admin"))
    widget = page.locator("section.widget", has=page.locator("h2", has_text="Broken links"))
    expect(widget.locator(".widget-body")).to_contain_text("Not run yet.", timeout=10_000)
    page.goto(server.url("/admin/plugins/linkcheck/"))
    expect(page.locator("main")).to_contain_text("Not run yet.")
    page.click("main button:has-text('Check now')")
    expect(page.locator(".alert-ok")).to_contain_text("A check is queued")
    for _ in range(60):  # the run takes the slow link's timeout; look until it is done
        page.goto(server.url("/admin/plugins/linkcheck/"))
        if page.locator("table.linkcheck-broken").count():
            break
        page.wait_for_timeout(500)
    rows = page.locator("table.linkcheck-broken tbody tr")
    expect(rows).to_have_count(4)  # missing, error, slow (timeout), /img.png (none on Keel)
    expect(page.locator("tr", has_text="/missing")).to_contain_text("HTTP 404")
    expect(page.locator("tr", has_text="/missing")).to_contain_text("Spring news")
    shoot(page, "report", server.leg)
    page.goto(server.url("/admin"))
    expect(widget.locator(".widget-figure")).to_have_text("4", timeout=10_000)
    expect(widget).to_contain_text("broken links of 7 checked")
    shoot(page, "dashboard", server.leg)
    widget.get_by_role("link", name="See the report").click()
    expect(page).to_have_url(re.compile(r"/admin/plugins/linkcheck/?$"))
    assert page.console_errors == []  # type: ignore[attr-defined]
