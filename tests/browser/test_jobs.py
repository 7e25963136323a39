"""An admin runs a job from /admin/jobs and watches it finish without reloading the page.

Embedded mode: `keel serve` runs the worker itself. Services leg: a `keel worker`
process beside the server, as in production.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, keel_worker, sign_in

pytestmark = pytest.mark.browser


@pytest.fixture
def worker(live_server: LiveServer) -> Iterator[None]:
    if live_server.leg == "embedded":
        yield  # the server's own in-process worker
        return
    with keel_worker(live_server.env, live_server):
        yield


def enqueue_from_admin(
    page: Page, live_server: LiveServer, type: str, choices: dict[str, str] | None = None
) -> str:
    """Sign in as the admin, enqueue a job from /admin/jobs once a worker is up; its page URL.

    The page is marked so that a test can tell it was never reloaded afterwards."""
    sign_in(page, live_server)
    page.goto(live_server.url("/admin/jobs"))
    expect(page.locator("[data-workers] tr[data-worker]")).not_to_have_count(0, timeout=20_000)
    page.click("summary:has-text('Run a job')")  # the form is folded under the list
    page.select_option("#f-type", type)
    for field, value in (choices or {}).items():  # the type's own fields, swapped in by htmx
        page.select_option(f"#f-p-{field}", value)
    page.click("main button:has-text('Enqueue')")
    expect(page).to_have_url(re.compile(r"/admin/jobs/\d+$"))
    page.evaluate("window.notReloaded = true")
    return page.url


def test_an_admin_runs_cleanup_and_sees_it_finish_live(
    page: Page, live_server: LiveServer, worker: None
) -> None:
    url = enqueue_from_admin(page, live_server, "cleanup")
    # htmx refreshes the status block until the job is done; the page is never reloaded.
    expect(page.locator("[data-status]")).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("[data-progress]")).to_have_text("100 %")
    assert page.evaluate("window.notReloaded") is True and page.url == url
    expect(page.locator("[data-result]")).to_contain_text("Jobs deleted")
    page.goto(live_server.url("/admin/jobs?status=succeeded"))
    expect(page.locator("tr[data-job] [data-status]").first).to_have_text("succeeded")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_an_admin_exports_the_users_watches_progress_and_downloads_the_csv(
    page: Page, live_server: LiveServer, worker: None
) -> None:
    url = enqueue_from_admin(page, live_server, "export", {"dataset": "users", "format": "csv"})
    expect(page.locator("[data-progress]")).to_have_text("100 %", timeout=20_000)
    expect(page.locator("[data-status]")).to_have_text("succeeded")
    assert page.evaluate("window.notReloaded") is True and page.url == url
    link = page.locator("main a:has-text('Download users-')")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert re.fullmatch(r"users-[0-9a-f]{16}\.csv", download.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [row["username"] for row in rows] == ["admin"] and rows[0]["role"] == "admin"
    assert "password_hash" not in rows[0]
    assert page.console_errors == []  # type: ignore[attr-defined]
