"""Health endpoints and the admin dashboard: app/system/api.py and app/system/pages.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import event

from app.asgi import create_app
from app.settings import Settings
from tests.conftest import PG_TEST_DB, client_for, free_port, pg_url, signed_in
from tests.core.test_store import silent_server


async def test_health_reports_service_version_and_uptime(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "ok" and body["service"] == "keel"
    assert body["version"] and body["uptime_seconds"] >= 0
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


async def test_live_answers_without_touching_dependencies(settings: Settings) -> None:
    broken = replace(settings, db=replace(settings.db, url="sqlite+aiosqlite:////dev/null/x.db"))
    app = create_app(broken)
    async with client_for(app) as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
    await app.state.engine.dispose()


async def test_ready_when_database_and_store_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready" and body["failing"] == []
    assert {c["status"] for c in body["checks"].values()} == {"ok"}
    assert response.headers["cache-control"] == "no-store"


async def test_ready_names_an_unreachable_store(settings: Settings) -> None:
    down = replace(
        settings, store=replace(settings.store, url=f"redis://127.0.0.1:{free_port()}/0")
    )
    app = create_app(down)
    async with client_for(app) as client:
        response = await client.get("/health/ready")
    await app.state.engine.dispose()
    assert response.status_code == 503
    assert response.json()["failing"] == ["store"]
    assert response.headers["retry-after"]


async def test_ready_answers_in_time_when_the_store_hangs(settings: Settings) -> None:
    async with silent_server() as port:
        hung = replace(
            settings,
            store=replace(settings.store, url=f"redis://127.0.0.1:{port}/0", socket_timeout=5),
            health=replace(settings.health, check_timeout=0.3),
        )
        app = create_app(hung)
        async with client_for(app) as client:
            response = await asyncio.wait_for(client.get("/health/ready"), 4)
        await app.state.engine.dispose()
    body = response.json()
    assert response.status_code == 503 and body["failing"] == ["store"]
    assert "no answer within" in body["checks"]["store"]["detail"]


async def test_admin_dashboard_shows_health_to_a_signed_in_viewer(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    async with app.lifespan():  # embedded mode runs the in-process worker
        await asyncio.sleep(0.05)
        async with signed_in(app, accounts["viewer"]) as client:
            response = await client.get("/admin")
    assert response.status_code == 200
    assert "System health" in response.text
    assert 'data-component="database"' in response.text
    assert 'data-component="store"' in response.text
    if settings.embedded:
        assert "in-process" in response.text


async def test_admin_area_sends_anonymous_visitors_to_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin?tab=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%3Ftab%3D1"
    htmx = await client.get(  # the dashboard's own refresh: htmx names the page it is on
        "/admin", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/admin"}
    )
    assert htmx.headers["hx-redirect"].startswith("/login?next=")


async def _end_connections_to(database: str) -> int:
    """What an administrator's pg_terminate_backend does to every session of `database`
    (and of no other database); returns once they are gone."""
    import asyncpg

    admin = await asyncpg.connect(pg_url("postgres").replace("postgresql+asyncpg", "postgresql"))
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        for _ in range(100):
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
            if not left:
                break
            await asyncio.sleep(0.02)
    finally:
        await admin.close()
    return int(ended)


def _end_connections_as_the_probe_queries(app: Litestar, database: str) -> list[int]:
    """The backends end right when the readiness probe sends its query (the moment a load
    balancer's probe meets a failover): pg_terminate_backend from another thread, once."""
    ended: list[int] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.strip() == "SELECT 1" and not ended:
            with ThreadPoolExecutor(max_workers=1) as pool:
                ended.append(pool.submit(asyncio.run, _end_connections_to(database)).result())

    event.listen(app.state.engine.sync_engine, "before_cursor_execute", before)
    return ended


@pytest.mark.parametrize("moment", ["between probes", "as the probe queries"])
async def test_ready_stays_ready_after_the_database_ends_its_connections(
    services_settings: Settings, services_accounts: dict, moment: str
) -> None:
    """Backends killed (a failover, an administrator): the pool's connections are dead,
    but the database answers on a new one, so the replica is ready; requests are fine."""
    app = create_app(services_settings)
    try:
        async with client_for(app) as client:
            warm = await asyncio.gather(*(client.get("/health/ready") for _ in range(4)))
            assert [r.status_code for r in warm] == [200] * 4
            if moment == "between probes":
                assert await _end_connections_to(PG_TEST_DB) >= 1
            else:
                ended = _end_connections_as_the_probe_queries(app, PG_TEST_DB)
            response = await client.get("/health/ready")
            if moment != "between probes":
                assert ended and ended[0] >= 1  # it happened, during this probe
            again = await client.get("/health/ready")
            page = await client.get("/api/v1/site")
    finally:
        await app.state.engine.dispose()
        await app.state.store.close()
    assert response.status_code == 200, response.json()
    assert response.json()["failing"] == [] and again.status_code == 200
    assert page.status_code == 200
