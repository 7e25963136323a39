"""Keel's events as plugins hear them (app/content/services/events.py,
app/accounts/services/events.py, the host's subscriptions in
app/extensions/services/host.py): the `listener` test plugin writes down every event it
hears in its own table, installed and activated through the admin API (both legs)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError

from app.accounts.models import User
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.content.models import Entry
from app.content.services.entries import get_entry, publish_entry
from app.core.events import Event
from app.extensions.services import isolation
from app.extensions.services.host import PluginHost
from app.jobs.models import Job
from app.jobs.services.queue import JOBS_ADDED
from app.runtime import build_runtime, build_worker
from app.settings import Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import PASSWORD, run_keel, signed_in, with_app_settings
from tests.content.test_media import image_bytes
from tests.jobs.conftest import ended_within, fast, wait_for_status
from tests.jobs.test_imports import csv_file

SHIPPED = Path(__file__).parent / "plugins"
CONTENT = "/api/v1/content"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    shutil.copytree(SHIPPED, folder)
    return folder


@pytest.fixture
def site_settings(settings: Settings, plugins_dir: Path, tmp_path: Path) -> Settings:
    return with_app_settings(settings, plugins_dir=plugins_dir, media_dir=tmp_path / "media")


@pytest.fixture
async def site(site_settings: Settings, accounts: dict[str, User]) -> AsyncIterator[Litestar]:
    """The app with the listener installed and active through the admin API (without the
    app's lifespan: `synced` brings a change in); its storage dropped after."""
    app = create_app(site_settings)
    try:
        async with api_as(app, accounts["admin"]) as admin:
            installed = await admin.post("/api/v1/plugins/listener/install")
            assert installed.status_code == 200, installed.text
            activated = await admin.post("/api/v1/plugins/listener/activate")
            assert activated.json()["status"] == "active", activated.text
        await synced(app)
        assert "listener" in host_of(app).loaded
        yield app
    finally:
        await host_of(app).stop()
        await isolation.drop_storage(app.state.runtime.engine, "listener")
        await app.state.runtime.close()


def host_of(app: Litestar) -> PluginHost:
    return app.state.runtime.service(PluginHost)


async def synced(app: Litestar) -> None:
    await host_of(app).sync()


async def heard(app: Litestar) -> list[tuple[str, dict[str, Any]]]:
    """What the listener wrote down, in order: (event, payload as JSON)."""
    host = host_of(app)
    table = host.storage("listener").table_name("heard")
    async with host.sessions("listener") as session:
        rows = await session.execute(text(f"SELECT event, detail FROM {table} ORDER BY id"))
        return [(event, json.loads(detail)) for event, detail in rows]


async def heard_names(app: Litestar) -> list[str]:
    return [event for event, _ in await heard(app)]


async def new_post(api: httpx.AsyncClient, title: str, **fields: Any) -> dict[str, Any]:
    created = await api.post(CONTENT, json={"title": title, "kind": "post", **fields})
    assert created.status_code == 201, created.text
    return dict(created.json())


async def test_an_entry_s_life_through_the_api_is_heard_once_per_change_with_its_payload(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["editor"]) as editor:
        post = await new_post(editor, "Hello events", body_markdown="Draft text")
        entry = f"{CONTENT}/{post['id']}"
        assert (await editor.patch(entry, json={"title": "Hello, events"})).status_code == 200
        assert await heard(site) == []  # a draft is nobody's business but editors'

        published = await editor.post(f"{entry}/publish")
        assert published.status_code == 200, published.text
        ((name, payload),) = await heard(site)
        assert name == "entry.published"
        assert payload == {
            "name": "entry.published",
            "id": post["id"],
            "kind": "post",
            "title": "Hello, events",
            "slug": "hello-events",
            "path": "/blog/hello-events",
            "status": "published",
            "published_at": payload["published_at"],
            "scheduled": False,
            "author_id": str(accounts["editor"].id),
            "at": payload["at"],
        }
        assert datetime.fromisoformat(payload["published_at"]) <= datetime.now(UTC)

        assert (await editor.patch(entry, json={"body_markdown": "New text"})).status_code == 200
        assert (await editor.post(f"{entry}/unpublish")).status_code == 200
        assert (await editor.delete(entry)).status_code == 204
    events = await heard(site)
    assert [name for name, _ in events] == [
        "entry.published",
        "entry.updated",
        "entry.unpublished",
        "entry.deleted",
    ]
    assert events[1][1]["status"] == "published"
    assert events[2][1]["status"] == "draft" and events[3][1]["status"] == "draft"
    assert {payload["id"] for _, payload in events} == {post["id"]}


async def test_a_scheduled_publication_says_when_the_entry_becomes_public(
    site: Litestar, accounts: dict[str, User]
) -> None:
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    async with api_as(site, accounts["editor"]) as editor:
        page = await new_post(editor, "Coming soon", kind="page", slug="soon")
        scheduled = await editor.post(
            f"{CONTENT}/{page['id']}/publish", json={"published_at": later.isoformat()}
        )
        assert scheduled.status_code == 200, scheduled.text
    ((name, payload),) = await heard(site)
    assert name == "entry.published"
    assert (payload["status"], payload["scheduled"], payload["path"]) == (
        "scheduled",
        True,
        "/soon",
    )
    assert datetime.fromisoformat(payload["published_at"]) == later


async def test_archiving_in_the_admin_pages_is_heard_as_unpublished(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["editor"]) as editor:
        post = await new_post(editor, "To the archive")
        assert (await editor.post(f"{CONTENT}/{post['id']}/publish")).status_code == 200
    async with signed_in(site, accounts["editor"]) as browser:
        archived = await browser.post(f"/admin/content/{post['id']}/archive")
        assert archived.status_code in (302, 303), archived.text
    events = await heard(site)
    assert [name for name, _ in events] == ["entry.published", "entry.unpublished"]
    assert events[1][1]["status"] == "archived"


async def test_a_change_that_rolls_back_is_never_heard(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["editor"]) as editor:
        post = await new_post(editor, "Never published")
    runtime = site.state.runtime
    actor = Actor(accounts["editor"].id, "editor")
    async with runtime.sessionmaker() as session:
        with pytest.raises(RuntimeError, match="after the publish"):
            async with session.begin():
                entry = await get_entry(session, post["id"])
                await publish_entry(session, actor, entry)
                raise RuntimeError("something failed after the publish")
        await runtime.events.deliver(session)  # as the request's session provider does
    assert await heard(site) == []
    async with site.state.sessionmaker() as session:
        assert (await session.get(Entry, post["id"])).status == "draft"  # type: ignore[union-attr]
    async with runtime.sessionmaker() as session:  # the same path, committed: heard
        async with session.begin():
            await publish_entry(session, actor, await get_entry(session, post["id"]))
        await runtime.events.deliver(session)
    assert await heard_names(site) == ["entry.published"]


async def test_a_subscriber_that_fails_or_runs_too_long_is_counted_and_the_change_commits(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["editor"]) as editor:
        failing = await new_post(editor, "Fail on purpose")
        slow = await new_post(editor, "Too slow")
        answered = await editor.post(f"{CONTENT}/{failing['id']}/publish")
        assert answered.status_code == 200, answered.text
        began = time.monotonic()
        answered = await editor.post(f"{CONTENT}/{slow['id']}/publish")
        assert answered.status_code == 200, answered.text
        assert time.monotonic() - began < 4  # the plugin's 1 s limit, not the handler's 5 s
    async with site.state.sessionmaker() as session:
        statuses = await session.scalars(select(Entry.status).order_by(Entry.title))
        assert list(statuses) == ["published", "published"]
    assert await heard(site) == []
    figures = host_of(site).figures["listener"]
    assert figures.hook_failures == 2
    assert figures.last_error == ("event entry.published of listener ran past its time limit (1 s)")
    async with signed_in(site, accounts["admin"]) as admin:
        page = await admin.get("/admin/plugins")
        metrics = (await admin.get("/metrics")).text
    row = page.text.split('data-plugin="listener"')[1].split("</tr>")[0]
    assert "2 failed hooks" in row and "ran past its time limit" in row
    failures = 'keel_plugin_hook_failures_total{plugin="listener",hook="event entry.published"'
    assert f'{failures},outcome="error"}} 1' in metrics
    assert f'{failures},outcome="timeout"}} 1' in metrics


async def test_a_deactivated_plugin_hears_nothing_more(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        deactivated = await admin.post("/api/v1/plugins/listener/deactivate")
        assert deactivated.json()["status"] == "inactive", deactivated.text
        await synced(site)
        post = await new_post(admin, "Unheard")
        assert (await admin.post(f"{CONTENT}/{post['id']}/publish")).status_code == 200
        assert await heard(site) == []
        assert (await admin.post("/api/v1/plugins/listener/activate")).status_code == 200
        await synced(site)
        assert (await admin.patch(f"{CONTENT}/{post['id']}", json={"title": "Heard"})).json()
    assert await heard_names(site) == ["entry.updated"]


async def test_accounts_and_media_are_heard_without_secrets(
    site: Litestar, accounts: dict[str, User]
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        created = await admin.post(
            "/api/v1/users",
            json={
                "email": "newcomer@example.org",
                "username": "newcomer",
                "password": PASSWORD,
                "role": "viewer",
                "display_name": "New Comer",
            },
        )
        assert created.status_code == 201, created.text
        user = f"/api/v1/users/{created.json()['id']}"
        assert (await admin.patch(user, json={"role": "editor"})).status_code == 200
        assert (await admin.patch(user, json={"display_name": "Renamed"})).status_code == 200
        assert (await admin.delete(user)).status_code == 204
        uploaded = await admin.post(
            "/api/v1/media",
            files={"file": ("photo.png", image_bytes("PNG"), "image/png")},
            data={"alt_text": "A photo"},
        )
        assert uploaded.status_code == 201, uploaded.text
    events = await heard(site)
    assert [name for name, _ in events] == [
        "user.created",
        "user.role_changed",
        "user.deleted",
        "media.uploaded",
    ]
    created_payload = events[0][1]
    assert set(created_payload) == {
        "name", "id", "username", "display_name", "email", "role", "previous_role",
        "is_active", "at",
    }  # fmt: skip
    assert (created_payload["username"], created_payload["role"]) == ("newcomer", "viewer")
    assert (events[1][1]["role"], events[1][1]["previous_role"]) == ("editor", "viewer")
    assert events[2][1]["display_name"] == "Renamed"
    media = events[3][1]
    assert (media["filename"], media["content_type"]) == ("photo.png", "image/png")
    assert (media["width"], media["height"]) == (40, 30)
    assert media["path"] == uploaded.json()["url"]
    assert media["uploaded_by_id"] == str(accounts["admin"].id)
    written = json.dumps(events)
    assert "argon2" not in written and PASSWORD not in written


async def test_a_csv_import_run_by_a_worker_is_heard_by_that_worker_s_plugins(
    site: Litestar, site_settings: Settings, accounts: dict[str, User]
) -> None:
    """The web process takes the upload; the worker process writes the rows and delivers
    their events to the plugins it runs (the app's host is stopped: only the worker's
    could hear them), and counts a failing subscriber in the worker's figures, which
    reach /metrics through the store shared with the app (services leg)."""
    rows = (
        "kind,title,slug,body,tags,status,publish_at,nav_order\n"
        "post,Imported now,imported-now,Text.,,published,,\n"
        "post,Imported later,imported-later,Soon.,,scheduled,2099-01-01T09:00:00Z,\n"
        "post,Imported draft,imported-draft,Later.,,draft,,\n"
        "post,Fail on purpose,fail,Oops.,,published,,\n"
    )
    async with api_as(site, accounts["editor"]) as editor:
        upload = await editor.post(
            "/api/v1/jobs/import", data={"kind": "content"}, files=csv_file(rows)
        )
        assert upload.status_code == 201, upload.text
    await host_of(site).stop()
    worker_runtime = build_runtime(fast(site_settings))
    worker_host = worker_runtime.service(PluginHost)
    try:
        await worker_host.sync()
        worker = build_worker(worker_runtime)
        running = asyncio.create_task(worker.run())
        try:
            job = await wait_for_status(
                site.state.sessionmaker, upload.json()["id"], {"succeeded", "failed", "dead"}, 30
            )
        finally:
            worker.request_stop()
            await ended_within(running, 60)
        assert job.status == "succeeded", job.last_error
        assert job.result["imported"] == 4
        assert worker_host.figures["listener"].hook_failures == 1
    finally:
        await worker_host.stop()
        await worker_runtime.close()
    events = await heard(site)
    assert [(name, payload["slug"], payload["scheduled"]) for name, payload in events] == [
        ("entry.published", "imported-now", False),
        ("entry.published", "imported-later", True),
    ]
    if not site_settings.store.is_memory:
        async with signed_in(site, accounts["admin"]) as admin:
            metrics = (await admin.get("/metrics")).text
        assert (
            'keel_plugin_hook_failures_total{plugin="listener",hook="event entry.published",'
            'outcome="error"} 1'
        ) in metrics


async def test_the_cli_delivers_what_it_committed_to_the_active_plugins(
    site: Litestar, keel_env: dict[str, str], plugins_dir: Path
) -> None:
    env = {**keel_env, "PLUGINS_DIR": str(plugins_dir)}
    created = run_keel(
        "users", "create", "--email", "cli@example.org", "--username", "cli-made",
        "--role", "editor", "--password-stdin",
        env=env, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    changed = run_keel("users", "set-role", "cli-made", "admin", env=env)
    assert changed.returncode == 0, changed.stderr
    events = await heard(site)
    assert [(name, payload["username"], payload["role"]) for name, payload in events] == [
        ("user.created", "cli-made", "editor"),
        ("user.role_changed", "cli-made", "admin"),
    ]


async def test_a_subscription_to_an_event_keel_does_not_have_is_refused_at_load(
    site_settings: Settings, plugins_dir: Path, accounts: dict[str, User]
) -> None:
    code = plugins_dir / "listener" / "listener" / "plugin.py"
    source = code.read_text()
    misspelt = source.replace("ENTRY_DELETED,\n            USER", '"entry.gone",\n            USER')
    assert misspelt != source
    code.write_text(misspelt)
    app = create_app(site_settings)
    try:
        async with api_as(app, accounts["admin"]) as admin:
            assert (await admin.post("/api/v1/plugins/listener/install")).status_code == 200
            assert (await admin.post("/api/v1/plugins/listener/activate")).status_code == 200
        await synced(app)
        host = host_of(app)
        assert "listener" not in host.loaded
        assert "no Keel event 'entry.gone'" in (host.figures["listener"].last_error or "")
        assert not [s for s in app.state.events.subscriptions if s.name.startswith("listener:")]
    finally:
        await host_of(app).stop()
        await isolation.drop_storage(app.state.runtime.engine, "listener")
        await app.state.runtime.close()


async def test_a_plugin_enqueues_its_own_job_in_its_own_transaction_and_stays_unprivileged(
    site: Litestar,
) -> None:
    """What a handler does with slow work: `ctx.enqueue` in its own `ctx.session()`. On
    PostgreSQL the job's row is Keel's to write, and the plugin's SQL afterwards runs as
    its own role again; once it commits, the workers are woken as for a request's job."""
    ctx = host_of(site).loaded["listener"].context
    wake_ups: list[object] = []

    async def wake(event: Event) -> None:
        wake_ups.append(event.payload)

    site.state.events.subscribe("test", JOBS_ADDED, wake)
    postgres = site.state.settings.db.url.startswith("postgresql")
    with pytest.raises(RuntimeError, match="changed its mind"):
        async with ctx.session() as session:
            await ctx.enqueue(session, "listener.note", {"note": "never"})
            raise RuntimeError("the plugin changed its mind")
    assert wake_ups == []
    async with ctx.session() as session:
        job_id = await ctx.enqueue(session, "listener.note", {"note": "later"})
        if postgres:
            assert await session.scalar(text("SELECT current_user")) == "keel_plugin_listener"
            with pytest.raises(ProgrammingError, match="permission denied"):
                async with session.begin_nested():
                    await session.execute(text("SELECT count(*) FROM users"))
        table = host_of(site).storage("listener").table_name("heard")
        await session.execute(text(f"INSERT INTO {table} (event, detail) VALUES ('own', '{{}}')"))
    async with site.state.sessionmaker() as session:
        jobs = list(await session.scalars(select(Job)))
    assert [(job.id, job.type, job.payload, job.status) for job in jobs] == [
        (job_id, "listener.note", {"note": "later"}, "queued")
    ]
    assert wake_ups == ["default"]
    assert await heard_names(site) == ["own"]
