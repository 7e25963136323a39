"""The plugin host: app/extensions/services/host.py, the mounts of app/extensions/api.py and
keel/plugin.py, with the test plugins under tests/extensions/plugins/."""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from litestar import Litestar
from sqlalchemy import update

from app.accounts.models import User
from app.asgi import create_app
from app.extensions.models import PluginRecord
from app.extensions.services import isolation, signing
from app.extensions.services.host import (
    POLL_SECONDS,
    PluginHookFailed,
    PluginHost,
    announce,
)
from app.jobs.models import Job
from app.jobs.services.queue import enqueue
from app.jobs.services.registry import known_job_type
from app.jobs.services.schedules import SCHEDULES
from app.settings import ROOT, Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import (
    bearer,
    client_for,
    free_port,
    keel_command,
    signed_in,
    with_app_settings,
)
from tests.extensions.test_events import heard
from tests.jobs.conftest import FAST

PLUGINS = Path(__file__).parent / "plugins"
MOUNTS = ("/api/plugins/hello/greeting", "/p/hello/", "/admin/plugins/hello/")


def plugin_settings(settings: Settings) -> Settings:
    return with_app_settings(settings, plugins_dir=PLUGINS)


async def put_row(app: Litestar, name: str, status: str, generation: int = 1) -> None:
    """A registry row as the lifecycle writes it (manifest: what the host reads)."""
    entry = {"hello": "hello.plugin:Hello", "broken": "broken.plugin:Broken"}[name]
    now = datetime.now(UTC)
    async with app.state.sessionmaker() as session, session.begin():
        found = await session.get(PluginRecord, name)
        if found is None:
            session.add(
                PluginRecord(
                    name=name,
                    version="1.0.0",
                    display_name=name.title(),
                    description="",
                    author="",
                    manifest={"name": name, "entry_point": entry, "time_limit": 0.5},
                    status=status,
                    installed_at=now,
                    updated_at=now,
                    checksum=signing.checksum(PLUGINS / name),
                    generation=generation,
                )
            )
        else:
            await session.execute(
                update(PluginRecord)
                .where(PluginRecord.name == name)
                .values(status=status, generation=PluginRecord.generation + 1)
            )


def host_of(app: Litestar) -> PluginHost:
    return app.state.runtime.service(PluginHost)


@pytest.fixture
async def plugin_app(settings: Settings, accounts: dict[str, User]) -> AsyncIterator[Litestar]:
    """An app (without its lifespan: tests sync the host themselves) over the test plugins."""
    app = create_app(plugin_settings(settings))
    yield app
    await host_of(app).stop()
    await app.state.runtime.close()


async def test_an_inactive_plugin_answers_404_on_all_three_mounts(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "inactive")
    await host_of(plugin_app).sync()
    async with signed_in(plugin_app, accounts["admin"]) as client:
        for path in MOUNTS:
            response = await client.get(path)
            assert response.status_code == 404, path
        api = await client.get(MOUNTS[0])
        assert api.headers["content-type"].startswith("application/problem+json")
        assert api.json()["error_id"]
        assert "text/html" in (await client.get("/p/hello/")).headers["content-type"]


async def test_a_plugin_page_without_a_form_sets_no_cookie_for_a_visitor(
    plugin_app: Litestar,
) -> None:
    """The CSRF token is made only when a page's form asks for it: making it, signing it
    and its Set-Cookie were a few per cent of a plugin page's cost, and a response that
    sets a cookie is one a shared cache may not keep."""
    await put_row(plugin_app, "hello", "active")
    assert await host_of(plugin_app).sync()
    async with client_for(plugin_app) as visitor:
        page = await visitor.get("/p/hello/")
    assert page.status_code == 200 and "Hello, visitor!" in page.text
    assert "set-cookie" not in page.headers


async def test_activating_serves_the_routes_and_deactivating_takes_them_away(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    assert await host.sync()
    async with signed_in(plugin_app, accounts["admin"]) as client:
        api = await client.get("/api/plugins/hello/greeting")
        assert api.status_code == 200
        assert api.json() == {"greeting": "Hello, hello!", "version": "1.0.0"}
        page = await client.get("/p/hello/")
        assert page.status_code == 200
        assert '<h1 class="hello">Hello, visitor!</h1>' in page.text
        assert "/p/hello/static/hello.css" in page.text
        css = await client.get("/p/hello/static/hello.css")
        assert css.status_code == 200 and "teal" in css.text
        admin = await client.get("/admin/plugins/hello/")
        assert admin.status_code == 200 and "Hello admin" in admin.text
        assert 'href="/admin/users"' in admin.text  # Keel's admin layout and menu around it
    await put_row(plugin_app, "hello", "inactive")
    assert await host.sync()
    async with signed_in(plugin_app, accounts["admin"]) as client:
        for path in MOUNTS:
            assert (await client.get(path)).status_code == 404, path


async def test_keel_guards_the_admin_mount_and_the_plugin_guards_its_routes(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "active")
    await host_of(plugin_app).sync()
    async with client_for(plugin_app) as anonymous:
        assert (await anonymous.get("/p/hello/")).status_code == 200
        admin = await anonymous.get("/admin/plugins/hello/")
        assert admin.status_code in (302, 303) and "/login" in admin.headers["location"]
        assert (await anonymous.get("/api/plugins/hello/editors")).status_code == 401
    async with signed_in(plugin_app, accounts["viewer"]) as viewer:
        assert (await viewer.get("/admin/plugins/hello/")).status_code == 403  # plugin: admins
    async with client_for(plugin_app) as api:
        as_viewer = await bearer(plugin_app, accounts["viewer"])
        as_editor = await bearer(plugin_app, accounts["editor"])
        editors = "/api/plugins/hello/editors"
        assert (await api.get(editors, headers=as_viewer)).status_code == 403
        assert (await api.get(editors, headers=as_editor)).json() == {"for": "editors"}


async def test_a_form_posted_to_a_plugin_page_is_csrf_checked_by_keel(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "active")
    await host_of(plugin_app).sync()
    async with signed_in(plugin_app, accounts["viewer"]) as client:
        signed = await client.post("/p/hello/sign", data={"name": "Ada"})
        assert signed.status_code == 303 and signed.headers["location"] == "/p/hello/?name=Ada"
        del client.headers["X-CSRF-Token"]
        forged = await client.post("/p/hello/sign", data={"name": "Eve"})
        assert forged.status_code == 403


async def test_a_timeout_answers_504_and_an_exception_500_each_with_an_error_id_and_counted(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    async with client_for(plugin_app) as client:
        began = time.monotonic()
        slow = await client.get("/api/plugins/hello/slow")
        assert time.monotonic() - began < 2  # the manifest's 0.5 s, not the handler's 5 s
        assert slow.status_code == 504
        assert slow.headers["content-type"].startswith("application/problem+json")
        assert slow.json()["error_id"]
        fail = await client.get("/api/plugins/hello/fail")
        assert fail.status_code == 500 and fail.json()["error_id"]
        assert "on purpose" not in fail.text
        page = await client.get("/p/hello/fail")
        assert page.status_code == 500 and "text/html" in page.headers["content-type"]
        slow_page = await client.get("/p/hello/slow")
        assert slow_page.status_code == 504 and "text/html" in slow_page.headers["content-type"]
        assert (await client.get("/api/plugins/hello/greeting")).status_code == 200
    figures = host.figures["hello"]
    assert (figures.timeouts, figures.errors, figures.requests) == (2, 2, 5)
    async with signed_in(plugin_app, accounts["admin"]) as admin:
        metrics = (await admin.get("/metrics")).text
    assert 'keel_plugin_requests_total{plugin="hello",outcome="timeout"} 2' in metrics
    assert 'keel_plugin_requests_total{plugin="hello",outcome="error"} 2' in metrics
    assert 'keel_plugin_requests_total{plugin="hello",outcome="ok"} 1' in metrics
    assert 'keel_plugin_request_seconds_count{plugin="hello"} 5' in metrics


async def test_hooks_run_under_the_time_limit_and_failures_are_reported(
    plugin_app: Litestar,
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "installed")
    await host.sync()
    assert "hello" not in host.loaded  # installed, not active: nothing served
    rows = await host._read_rows()
    plugin = host.load(next(row for row in rows if row.name == "hello"))
    assert await host.call_hook(plugin, "on_activate") is None
    with pytest.raises(PluginHookFailed, match="time limit"):
        await host.call_hook(plugin, "on_install")
    with pytest.raises(PluginHookFailed, match="cannot say goodbye"):
        await host.call_hook(plugin, "on_uninstall")
    assert await host.call_hook(plugin, "on_no_such_hook") is None
    assert host.figures["hello"].hook_failures == 2
    host.release(plugin)
    assert plugin.module not in sys.modules


async def test_a_plugin_that_fails_to_import_is_skipped_and_the_app_serves_on(
    plugin_app: Litestar, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "broken", "active")
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    await host.sync()  # the same generation is not tried again (one warning)
    assert set(host.loaded) == {"hello"}
    assert host.figures["broken"].load_failures == 1
    assert "missing" in (host.figures["broken"].last_error or "")
    assert [r.message for r in caplog.records].count("plugin not loaded") == 1
    async with client_for(plugin_app) as client:
        assert (await client.get("/api/plugins/broken/anything")).status_code == 404
        assert (await client.get("/api/plugins/hello/greeting")).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


async def test_a_plugin_whose_files_differ_from_its_checksum_is_not_loaded(
    plugin_app: Litestar,
) -> None:
    """Installed from a folder (no zip to restore): files an admin did not accept never run."""
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    async with plugin_app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(PluginRecord).where(PluginRecord.name == "hello").values(checksum="0" * 64)
        )
    await host.sync()
    assert "hello" not in host.loaded
    assert host.figures["hello"].load_failures == 1
    assert "differ from the checksum" in (host.figures["hello"].last_error or "")
    async with client_for(plugin_app) as client:
        assert (await client.get("/api/plugins/hello/greeting")).status_code == 404


async def test_an_active_plugin_has_an_admin_menu_entry_while_it_is_loaded(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    host = host_of(plugin_app)
    link = '<a href="/admin/plugins/hello" >Hello</a>'
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    async with signed_in(plugin_app, accounts["admin"]) as admin:
        dashboard = await admin.get("/admin")
        assert dashboard.status_code == 200
        assert link in dashboard.text
        assert 'href="/admin/users"' in dashboard.text  # Keel's entries as before
        served = await admin.get("/admin/plugins/hello")
        assert served.status_code == 200 and "Hello admin" in served.text
    await put_row(plugin_app, "hello", "inactive")
    await host.sync()
    async with signed_in(plugin_app, accounts["admin"]) as admin:
        dashboard = await admin.get("/admin")
        assert 'href="/admin/plugins/hello"' not in dashboard.text
        assert 'href="/admin/users"' in dashboard.text


async def test_the_admin_page_shows_each_plugin_s_figures_and_last_error_here(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "active")
    await host_of(plugin_app).sync()
    async with client_for(plugin_app) as client:
        assert (await client.get("/api/plugins/hello/fail")).status_code == 500
        assert (await client.get("/api/plugins/hello/greeting")).status_code == 200
    async with signed_in(plugin_app, accounts["admin"]) as admin:
        page = await admin.get("/admin/plugins")
    assert page.status_code == 200
    row = page.text.split('data-plugin="hello"')[1].split("</tr>")[0]
    assert "Running in this process" in row
    assert "2 requests" in row and '<span data-figure="errors">1 errors</span>' in row
    assert "GET /api/plugins/hello/fail answered 500" in row


async def test_each_load_imports_the_plugin_under_a_module_name_of_its_own(
    plugin_app: Litestar,
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    first = host.loaded["hello"].module
    await put_row(plugin_app, "hello", "active")  # a new generation: loaded again
    await host.sync()
    second = host.loaded["hello"].module
    assert first != second and first not in sys.modules and second in sys.modules
    assert not any(str(PLUGINS) == entry for entry in sys.path)
    await put_row(plugin_app, "hello", "inactive")
    await host.sync()
    assert not any(name.startswith((first, second)) for name in sys.modules)


async def test_an_active_plugin_s_jobs_and_schedules_exist_only_while_it_is_active(
    plugin_app: Litestar,
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    kind = known_job_type("hello.count")
    assert kind is not None and kind.timeout == 0.5  # the plugin's time limit
    assert "hello.hourly" in {declared.name for declared in SCHEDULES}
    done = await kind.run(SimpleNamespace(payload={"by": "test"}))  # type: ignore[arg-type]
    assert done == {"counted": "hello", "by": "test"}
    await put_row(plugin_app, "hello", "inactive")
    await host.sync()
    assert known_job_type("hello.count") is None
    assert "hello.hourly" not in {declared.name for declared in SCHEDULES}


async def test_the_plugin_index_lists_the_plugins_active_here(plugin_app: Litestar) -> None:
    """Plugin folders that are not installed or not active are no visitor's business."""
    async with client_for(plugin_app) as client:
        assert (await client.get("/api/plugins")).json() == {"items": [], "total": 0}
        await put_row(plugin_app, "hello", "active")
        await host_of(plugin_app).sync()
        index = await client.get("/api/plugins")
    assert index.status_code == 200
    assert [item["name"] for item in index.json()["items"]] == ["hello"]


# -- dashboard widgets ----------------------------------------------------------------------

HTMX = {"HX-Request": "true"}
WIDGETS = {n: f"/admin/widgets/hello/{n}" for n in range(4)}
"""hello's widgets: 0 fine, 1 slow (past its 0.5 s), 2 failing, 3 plain text."""


async def test_the_dashboard_lists_each_active_plugin_s_widgets_without_running_them(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "active")
    await host_of(plugin_app).sync()
    async with signed_in(plugin_app, accounts["viewer"]) as viewer:
        began = time.monotonic()
        dashboard = await viewer.get("/admin")
        assert time.monotonic() - began < 2  # the slow widget is not waited for
    assert dashboard.status_code == 200
    for title, address in zip(
        ("Greeting", "Slow", "Failing", "Text"), WIDGETS.values(), strict=True
    ):
        assert f"<h2>{title}</h2>" in dashboard.text
        assert f'hx-get="{address}" hx-trigger="load"' in dashboard.text
        assert f'<a href="{address}">' in dashboard.text  # without JavaScript: a link
    assert host_of(plugin_app).figures.get("hello") is None  # nothing of the plugin ran
    await put_row(plugin_app, "hello", "inactive")
    await host_of(plugin_app).sync()
    async with signed_in(plugin_app, accounts["viewer"]) as viewer:
        dashboard = await viewer.get("/admin")
        gone = await viewer.get(WIDGETS[0], headers=HTMX)
    assert dashboard.status_code == 200 and "/admin/widgets/" not in dashboard.text
    assert gone.status_code == 404 and "no longer available" in gone.text
    assert "<html" not in gone.text  # the fragment, swapped into the dashboard's box


async def test_a_widget_renders_as_a_fragment_or_as_a_page_of_its_own(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    await put_row(plugin_app, "hello", "active")
    await host_of(plugin_app).sync()
    async with signed_in(plugin_app, accounts["viewer"]) as viewer:
        fragment = await viewer.get(WIDGETS[0], headers=HTMX)
        page = await viewer.get(WIDGETS[0])
        text = await viewer.get(WIDGETS[3], headers=HTMX)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert '<p class="hello-widget">Hello, dashboard!</p>' in fragment.text
    assert '<a href="/admin">' in fragment.text  # Keel's route names, from the plugin's template
    assert page.status_code == 200 and "<html" in page.text and "Hello, dashboard!" in page.text
    assert "Back to the dashboard" in page.text
    assert "&lt;b&gt;plain text&lt;/b&gt;" in text.text  # a string is text, not markup
    async with client_for(plugin_app) as anonymous:
        assert (await anonymous.get(WIDGETS[0])).status_code in (302, 303)


async def test_a_widget_that_fails_or_runs_too_long_shows_a_small_box_and_is_counted(
    plugin_app: Litestar, accounts: dict[str, User]
) -> None:
    host = host_of(plugin_app)
    await put_row(plugin_app, "hello", "active")
    await host.sync()
    async with signed_in(plugin_app, accounts["viewer"]) as viewer:
        began = time.monotonic()
        slow = await viewer.get(WIDGETS[1], headers=HTMX)
        assert time.monotonic() - began < 2  # the plugin's 0.5 s, not the widget's 5 s
        failing = await viewer.get(WIDGETS[2], headers=HTMX)
        dashboard = await viewer.get("/admin")
    for answer in (slow, failing):
        assert answer.status_code == 200
        assert 'class="widget-body widget-failed"' in answer.text
        assert "This widget failed" in answer.text
        assert "on purpose" not in answer.text
    assert dashboard.status_code == 200
    figures = host.figures["hello"]
    assert figures.hook_failures == 2
    assert "widget:2 of hello failed: RuntimeError" in (figures.last_error or "")
    async with signed_in(plugin_app, accounts["admin"]) as admin:
        metrics = (await admin.get("/metrics")).text
    failures = "keel_plugin_hook_failures_total"
    assert f'{failures}{{plugin="hello",hook="widget:1",outcome="timeout"}} 1' in metrics
    assert f'{failures}{{plugin="hello",hook="widget:2",outcome="error"}} 1' in metrics


# -- cross-process ------------------------------------------------------------------------


@asynccontextmanager
async def running(
    settings: Settings, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[Litestar]:
    app = create_app(plugin_settings(settings))
    host_of(app).poll_seconds = poll_seconds
    async with app.lifespan():
        yield app


async def status_within(app: Litestar, path: str, status: int, seconds: float) -> float:
    """Seconds until `path` answers `status` (fails after `seconds`)."""
    began = time.monotonic()
    async with client_for(app) as client:
        while True:
            if (await client.get(path)).status_code == status:
                return time.monotonic() - began
            assert time.monotonic() - began < seconds, f"{path} never answered {status}"
            await asyncio.sleep(0.02)


async def test_a_change_announced_in_one_process_is_served_by_another_at_once(
    services_settings: Settings, services_accounts: dict
) -> None:
    no_polls = 60.0  # only the announcement can bring the change in time
    async with (
        running(services_settings) as first,
        running(services_settings, no_polls) as second,
    ):
        await put_row(first, "hello", "active")
        await announce(first.state.store)
        await status_within(second, "/api/plugins/hello/greeting", 200, 2.0)
        await put_row(first, "hello", "inactive")
        await announce(first.state.store)
        await status_within(second, "/api/plugins/hello/greeting", 404, 2.0)


@pytest.mark.parametrize("store", ["down"])
async def test_without_the_store_the_poll_alone_brings_a_change_within_2_s(
    settings: Settings, accounts: dict, store: str
) -> None:
    """Either leg's database; a store nothing answers on: no announcement arrives."""
    down = replace(
        settings, store=replace(settings.store, url=f"redis://127.0.0.1:{free_port()}/0")
    )
    if settings.store.is_memory:
        down = settings  # the memory store of another runtime never hears the first one
    async with running(down) as first, running(down) as second:
        await put_row(first, "hello", "active")
        await status_within(second, "/api/plugins/hello/greeting", 200, 2.0)
        await put_row(first, "hello", "inactive")
        await status_within(second, "/p/hello/", 404, 2.0)


async def test_a_worker_follows_activations_too(settings: Settings, accounts: dict) -> None:
    """`keel worker` runs the host's `follow` beside its loop (Worker companions)."""
    from app.jobs.services.worker import Worker
    from app.runtime import build_runtime

    worker_runtime = build_runtime(plugin_settings(settings))
    host = worker_runtime.service(PluginHost)
    worker = Worker(
        worker_runtime.settings,
        worker_runtime.store,
        worker_runtime.sessionmaker,
        companions=(host.follow,),
    )
    task = asyncio.create_task(worker.run())
    try:
        app = create_app(plugin_settings(settings))
        await put_row(app, "hello", "active")
        began = time.monotonic()
        while "hello" not in host.loaded:
            assert time.monotonic() - began < 2.0
            await asyncio.sleep(0.02)
        await put_row(app, "hello", "inactive")
        while "hello" in host.loaded:
            assert time.monotonic() - began < 4.0
            await asyncio.sleep(0.02)
        await app.state.runtime.close()
    finally:
        worker.request_stop()
        await task
        await worker_runtime.close()


def log_records(log: Path) -> list[dict[str, object]]:
    """The JSON lines a process wrote to `log` so far."""
    text = log.read_text() if log.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def logged(log: Path, event: str, plugin: str | None, deadline: float) -> None:
    """Wait until the process writing `log` logs `event` (for `plugin`), failing at
    `deadline` (time.monotonic())."""
    while not any(
        record.get("event") == event and plugin in (None, record.get("plugin"))
        for record in log_records(log)
    ):
        assert time.monotonic() < deadline, f"no {event!r} in time: {log_records(log)}"
        await asyncio.sleep(0.02)


async def notes_taken(app: Litestar) -> list[str]:
    """The notes the listener's job wrote down (by whichever process ran it)."""
    return [detail["note"] for event, detail in await heard(app) if event == "job"]


async def notes_within(app: Litestar, wanted: list[str], deadline: float) -> None:
    while (taken := await notes_taken(app)) != wanted:
        assert time.monotonic() < deadline, f"notes {taken}, not {wanted}, in time"
        await asyncio.sleep(0.02)


async def enqueue_note(app: Litestar, note: str, delay: float = 0.0) -> int:
    async with app.state.sessionmaker() as session, session.begin():
        return await enqueue(session, "listener.note", {"note": note}, delay=delay)


async def test_a_keel_worker_process_follows_activation_and_deactivation_within_2_s(
    settings: Settings, accounts: dict[str, User], keel_env: dict[str, str], tmp_path: Path
) -> None:
    """A real `keel worker` beside the app of this test, sharing its database (and on the
    services leg its Valkey; on the embedded leg the worker's poll alone brings changes).
    A job of a plugin that is not active is not lost: it waits in the queue, given back by
    the worker that claims it, and runs once the plugin is active again."""
    plugins_dir = tmp_path / "plugins"
    shutil.copytree(PLUGINS, plugins_dir)
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    log = tmp_path / "worker.log"
    env = {**keel_env, **FAST, "PLUGINS_DIR": str(plugins_dir)}
    with log.open("wb") as output:
        worker = await asyncio.create_subprocess_exec(
            *keel_command("worker"), env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        await logged(log, "worker started", None, time.monotonic() + 60)  # not measured
        async with api_as(app, accounts["admin"]) as admin:
            installed = await admin.post("/api/v1/plugins/listener/install")
            assert installed.status_code == 200, installed.text
            activated = await admin.post("/api/v1/plugins/listener/activate")
            assert activated.json()["status"] == "active", activated.text
            active_at = time.monotonic()
            await host_of(app).sync()  # this process knows the job type, to enqueue it
            await enqueue_note(app, "first")
            await notes_within(app, ["first"], active_at + 2.0)

            # due once the 2 s are over: the worker has dropped the plugin by then
            waiting = await enqueue_note(app, "waiting", delay=3.0)
            deactivated = await admin.post("/api/v1/plugins/listener/deactivate")
            assert deactivated.json()["status"] == "inactive", deactivated.text
            inactive_at = time.monotonic()
            await logged(log, "plugin unloaded", "listener", inactive_at + 2.0)
            given_back = time.monotonic() + 30
            while True:
                async with app.state.sessionmaker() as session:
                    job = await session.get(Job, waiting)
                assert job is not None
                if job.last_error:
                    break
                assert time.monotonic() < given_back, f"job {waiting} never claimed"
                await asyncio.sleep(0.05)
            assert (job.status, job.attempts) == ("queued", 0)
            assert "waits in the queue" in job.last_error
            assert await notes_taken(app) == ["first"]

            again = await admin.post("/api/v1/plugins/listener/activate")
            assert again.json()["status"] == "active", again.text
            await notes_within(app, ["first", "waiting"], time.monotonic() + 5.0)
    finally:
        worker.kill()
        await worker.wait()
        await host_of(app).stop()
        await isolation.drop_storage(app.state.runtime.engine, "listener")
        await app.state.runtime.close()


# -- the interface ---------------------------------------------------------------------


def keel_imports(path: Path) -> list[str]:
    """Imports of Keel's internals (`app`, `app.…`) in one file: a plugin's code may import
    `keel.plugin`, its tests (a `tests/` folder) `keel.testing` too."""
    allowed = {"keel.plugin", "keel.testing"} if "tests" in path.parts[-2:-1] else {"keel.plugin"}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path}: {name}" for name in names if name == "app" or name.startswith("app.")]
        found += [
            f"{path}: {name}" for name in names if name.startswith("keel.") and name not in allowed
        ]
    return found


def test_plugins_import_nothing_of_keel_but_keel_plugin() -> None:
    files = [*PLUGINS.rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    shipped = {f.parent.parent.name for f in (ROOT / "plugins").rglob("plugin.py")}
    assert {"guestbook", "linkcheck"} <= shipped
    assert [found for path in files for found in keel_imports(path)] == []


def test_the_walk_catches_an_import_of_keel_internals(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import app.core.db\nfrom app.accounts import models\nfrom keel.x import y\n")
    assert len(keel_imports(sneaky)) == 3


def test_only_a_plugin_s_tests_may_import_the_test_kit(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    kit = "from keel.testing import site_fixture\nfrom keel.plugin import get\n"
    (tmp_path / "tests" / "conftest.py").write_text(kit)
    (tmp_path / "plugin.py").write_text(kit)
    assert keel_imports(tmp_path / "tests" / "conftest.py") == []
    assert len(keel_imports(tmp_path / "plugin.py")) == 1


def test_keel_plugin_says_its_version_and_exposes_only_its_interface() -> None:
    import keel.plugin

    assert keel.plugin.API_VERSION == "1.0"
    assert all(hasattr(keel.plugin, name) for name in keel.plugin.__all__)
    for name in ("Plugin", "PluginContext", "get", "post", "Controller", "public"):
        assert name in keel.plugin.__all__
