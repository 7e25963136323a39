"""The link check shipped with Keel (plugins/linkcheck), installed and activated through the
admin API, run by a real worker against a real local web site (both legs)."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import User
from app.accounts.services.audit import Actor, AuditEntry
from app.asgi import create_app
from app.content.services.entries import EntryInput, publish_entry, save_entry
from app.extensions.services.host import PluginHost
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.settings import ROOT, Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import signed_in, with_app_settings
from tests.jobs.conftest import running_worker, wait_for_status

LINKCHECK = ROOT / "plugins" / "linkcheck"
REPORT = "/admin/plugins/linkcheck/"
TIMEOUT = 2
"""The `timeout_seconds` the tests set; the slow address answers after SLOW seconds."""
SLOW = 6.0


class Site(BaseHTTPRequestHandler):
    """A web site with one address per kind of answer."""

    def do_HEAD(self) -> None:
        self.answer()

    def do_GET(self) -> None:
        self.answer()

    def answer(self) -> None:
        path = self.path
        if path == "/slow":
            time.sleep(SLOW)
        if path == "/head-refused" and self.command == "HEAD":
            status, location = 405, None
        elif path in ("/ok", "/img.png", "/slow", "/head-refused"):
            status, location = 200, None
        elif path == "/moved":
            status, location = 301, "/ok"
        elif path == "/loop":
            status, location = 302, "/loop"
        elif path == "/error":
            status, location = 500, None
        else:
            status, location = 404, None
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the slow answer finds its client gone: expected


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """The local site's base address (http://127.0.0.1:<port>)."""
    server = QuietServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def site(
    settings: Settings, accounts: dict[str, User], tmp_path: Path, web: str
) -> AsyncIterator[Litestar]:
    """The app (PUBLIC_URL: the local site, so relative links land there) over a copy of
    the link check, installed, set to a 1 s timeout and active; uninstalled after."""
    plugins_dir = tmp_path / "plugins"
    shutil.copytree(LINKCHECK, plugins_dir / "linkcheck")
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir, public_url=web))
    async with api_as(app, accounts["admin"]) as admin:
        installed = await admin.post("/api/v1/plugins/linkcheck/install")
        assert installed.status_code == 200, installed.text
        saved = await admin.put(
            "/api/v1/plugins/linkcheck/settings", json={"values": {"timeout_seconds": TIMEOUT}}
        )
        assert saved.status_code == 200, saved.text
        activated = await admin.post("/api/v1/plugins/linkcheck/activate")
        assert activated.json()["status"] == "active", activated.text
    await app.state.runtime.service(PluginHost).sync()
    yield app
    async with api_as(app, accounts["admin"]) as admin:
        gone = await admin.post("/api/v1/plugins/linkcheck/uninstall", json={"confirm": True})
        assert gone.status_code == 204, gone.text
    await app.state.runtime.service(PluginHost).stop()
    await app.state.runtime.close()


async def write(
    app: Litestar, author: User, title: str, body: str, *, kind: str = "post", publish: bool = True
) -> None:
    actor = Actor(author.id, author.username)
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(
            session, actor, EntryInput(kind=kind, title=title, body_markdown=body)
        )
        if publish:
            await publish_entry(session, actor, entry)


async def publish_links(app: Litestar, author: User, web: str) -> None:
    """A post and a page linking to every kind of address, and a draft (not checked)."""
    await write(
        app,
        author,
        "Links",
        f"[ok]({web}/ok) [moved]({web}/moved) [missing]({web}/missing) [error]({web}/error) "
        f"[slow]({web}/slow) [head]({web}/head-refused) [loop]({web}/loop#part) "
        "![picture](/img.png) [relative](missing-page) "
        "[mail](mailto:someone@example.org) [call](tel:+441234) [top](#top)",
    )
    await write(app, author, "About", f"[ok again]({web}/ok) [gone]({web}/missing)", kind="page")
    await write(app, author, "Draft", f"[draft]({web}/draft-only)", publish=False)


async def check_now(app: Litestar, user: User) -> int:
    """Check now on the admin page, as `user`; the job's id."""
    async with signed_in(app, user) as client:
        answer = await client.post(f"{REPORT}check")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"{REPORT}?notice=queued"
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0)


async def run(app: Litestar, settings: Settings, job_id: int) -> Job:
    async with running_worker(settings, app.state.sessionmaker, app.state.store):
        return await wait_for_status(app.state.sessionmaker, job_id, {"succeeded"}, timeout=30)


async def report(app: Litestar, admin: User) -> dict[str, Any]:
    async with api_as(app, admin) as client:
        answer = await client.get("/api/plugins/linkcheck/report")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_run_reports_the_broken_links_of_the_published_entries(
    site: Litestar, settings: Settings, accounts: dict[str, User], web: str
) -> None:
    await publish_links(site, accounts["editor"], web)
    job = await run(site, settings, await check_now(site, accounts["editor"]))
    assert job.result == {"entries": 2, "links": 9, "checked": 9, "broken": 5}
    found = await report(site, accounts["admin"])
    assert (found["links"], found["checked"], found["broken"]) == (9, 9, 5)
    broken = {item["url"]: item for item in found["items"]}
    assert set(broken) == {
        f"{web}/missing",
        f"{web}/error",
        f"{web}/slow",
        f"{web}/loop",
        f"{web}/blog/missing-page",  # relative to the post's own address
    }
    assert broken[f"{web}/missing"]["status"] == 404
    assert broken[f"{web}/error"]["status"] == 500
    assert broken[f"{web}/slow"]["error"] == f"no answer within {TIMEOUT} s"
    assert broken[f"{web}/loop"]["error"] == "more than 5 redirects"
    assert broken[f"{web}/missing"]["linked_from"] == [
        {"title": "About", "path": "/about"},
        {"title": "Links", "path": "/blog/links"},
    ]
    assert broken[f"{web}/error"]["first_broken_at"] == broken[f"{web}/error"]["last_broken_at"]
    assert (found["total"], found["page"], found["per_page"]) == (5, 1, 20)
    async with api_as(site, accounts["admin"]) as client:
        past = await client.get("/api/plugins/linkcheck/report", params={"page": 2})
        nonsense = await client.get("/api/plugins/linkcheck/report", params={"page": "x"})
    assert past.status_code == 200 and past.json()["items"] == [] and past.json()["total"] == 5
    assert nonsense.status_code == 400


async def test_the_admin_page_lists_them_with_the_entries_and_check_now_for_editors(
    site: Litestar, settings: Settings, accounts: dict[str, User], web: str
) -> None:
    async with signed_in(site, accounts["viewer"]) as viewer:
        empty = await viewer.get(REPORT)
    assert empty.status_code == 200 and "Not run yet." in empty.text
    assert "Check now" not in empty.text  # viewers read; editors and admins check
    async with signed_in(site, accounts["viewer"]) as viewer:
        refused = await viewer.post(f"{REPORT}check")
    assert refused.status_code == 403
    await publish_links(site, accounts["editor"], web)
    await run(site, settings, await check_now(site, accounts["editor"]))
    async with signed_in(site, accounts["editor"]) as editor:
        page = await editor.get(REPORT)
    assert page.status_code == 200
    assert "Check now" in page.text
    assert f'data-url="{web}/missing"' in page.text and f'data-url="{web}/ok"' not in page.text
    assert "HTTP 404" in page.text and "HTTP 500" in page.text
    assert '<a href="/blog/links" hx-boost="false">Links</a>' in page.text
    assert '<a href="/about" hx-boost="false">About</a>' in page.text
    async with site.state.sessionmaker() as session:
        audited = (await session.execute(select(AuditEntry.action, AuditEntry.details))).all()
    assert ("job.enqueue", {"type": "linkcheck.check"}) in [tuple(row) for row in audited]


async def test_no_broken_links_says_how_many_were_checked(
    site: Litestar, settings: Settings, accounts: dict[str, User], web: str
) -> None:
    await write(site, accounts["editor"], "Fine", f"[ok]({web}/ok) [moved]({web}/moved)")
    await run(site, settings, await check_now(site, accounts["admin"]))
    async with signed_in(site, accounts["viewer"]) as viewer:
        page = await viewer.get(REPORT)
        widget = await viewer.get("/admin/widgets/linkcheck/0", headers={"HX-Request": "true"})
    assert "No broken links found in 2 links." in page.text
    assert '<p class="widget-figure">0</p>' in widget.text


async def test_the_widget_shows_the_count_and_links_to_the_report(
    site: Litestar, settings: Settings, accounts: dict[str, User], web: str
) -> None:
    async with signed_in(site, accounts["viewer"]) as viewer:
        dashboard = await viewer.get("/admin")
        before = await viewer.get("/admin/widgets/linkcheck/0", headers={"HX-Request": "true"})
    assert dashboard.status_code == 200
    assert "<h2>Broken links</h2>" in dashboard.text
    assert 'hx-get="/admin/widgets/linkcheck/0"' in dashboard.text
    assert "Not run yet." in before.text
    await publish_links(site, accounts["editor"], web)
    await run(site, settings, await check_now(site, accounts["editor"]))
    async with signed_in(site, accounts["viewer"]) as viewer:
        after = await viewer.get("/admin/widgets/linkcheck/0", headers={"HX-Request": "true"})
    assert after.status_code == 200
    assert '<p class="widget-figure is-bad">5</p>' in after.text
    assert "broken links of 9 checked" in after.text
    link = re.search(r'<a href="([^"]+)">See the report</a>', after.text)
    assert link and link.group(1).rstrip("/") == REPORT.rstrip("/")
    async with signed_in(site, accounts["viewer"]) as viewer:
        assert (await viewer.get(link.group(1))).status_code == 200


async def test_a_scheduled_run_waits_for_the_interval_and_a_link_stays_broken_since_first_seen(
    site: Litestar, settings: Settings, accounts: dict[str, User], web: str
) -> None:
    await write(site, accounts["editor"], "One", f"[missing]({web}/missing)")
    await run(site, settings, await check_now(site, accounts["editor"]))
    first = (await report(site, accounts["admin"]))["items"][0]
    async with site.state.sessionmaker() as session, session.begin():
        scheduled = await enqueue(session, "linkcheck.check", {})
    waited = await run(site, settings, scheduled)
    assert list((waited.result or {}).keys()) == ["skipped"]
    await run(site, settings, await check_now(site, accounts["editor"]))
    again = (await report(site, accounts["admin"]))["items"][0]
    assert again["first_broken_at"] == first["first_broken_at"]
    assert datetime.fromisoformat(again["last_broken_at"]) > datetime.fromisoformat(
        first["last_broken_at"]
    )


async def test_the_report_api_is_for_admins(site: Litestar, accounts: dict[str, User]) -> None:
    async with api_as(site, accounts["editor"]) as editor:
        assert (await editor.get("/api/plugins/linkcheck/report")).status_code == 403
    found = await report(site, accounts["admin"])
    assert found["last_run"] is None and found["items"] == [] and found["broken"] == 0
