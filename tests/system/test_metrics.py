"""`/metrics`: who may scrape it, and that its figures are the deployment's (both legs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from litestar import Litestar

import tests.jobs.handlers  # noqa: F401  (declares the test.* job types)
from app.accounts.models import User
from app.asgi import create_app
from app.content.services.page_cache import PageCache
from app.core.metrics import METRICS, Metric, Scrape, Tally, gauge, stored
from app.core.registry import RegistryClash
from app.jobs.services.queue import enqueue
from app.settings import MetricsSettings, Settings
from tests.conftest import bearer, client_for, signed_in
from tests.core.test_metrics import Samples, parse_exposition, value
from tests.jobs.conftest import running_worker, wait_for_status

TOKEN = "scrape-token-for-the-tests-0123456789"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


def with_token(settings: Settings) -> Settings:
    return replace(settings, metrics=MetricsSettings(token=TOKEN))


@pytest.fixture
async def metrics_app(settings: Settings, accounts: dict[str, User]) -> AsyncIterator[Litestar]:
    """The app with METRICS_TOKEN set, accounts created."""
    application = create_app(with_token(settings))
    yield application
    await application.state.engine.dispose()
    await application.state.store.close()


async def scrape(app: Litestar) -> Samples:
    async with client_for(app) as client:
        response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_exposition(response.text)


async def test_nobody_reads_the_figures_without_the_token_or_an_admin(
    metrics_app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(metrics_app) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        viewer = await client.get("/metrics", headers=await bearer(metrics_app, accounts["viewer"]))
        admin = await client.get("/metrics", headers=await bearer(metrics_app, accounts["admin"]))
        elsewhere = await client.get("/api/v1/users", headers=SCRAPER)
    for refused, status in ((anonymous, 401), (wrong, 401), (viewer, 403), (elsewhere, 401)):
        assert refused.status_code == status
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == status
    assert admin.status_code == 200 and "# TYPE keel_build_info gauge" in admin.text
    async with signed_in(metrics_app, accounts["editor"]) as browser:
        assert (await browser.get("/metrics")).status_code == 403


async def test_without_a_token_set_only_admins_read_the_figures(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        assert (await client.get("/metrics", headers=SCRAPER)).status_code == 401
    async with signed_in(app, accounts["admin"]) as browser:
        response = await browser.get("/metrics")
    assert response.status_code == 200
    parse_exposition(response.text)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    metrics_app: Litestar,
) -> None:
    async with client_for(metrics_app) as client:
        for job_id in (101, 202, 303):
            assert (await client.get(f"/api/v1/jobs/{job_id}")).status_code == 401
        assert (await client.get("/health/live")).status_code == 200
        for _ in range(2):  # a miss, then a hit answered in front of the router
            page = await client.get("/blog")
        assert page.headers["x-cache"] == "hit"
    samples = await scrape(metrics_app)
    requests = "keel_http_requests_total"
    job = {"method": "GET", "route": "/api/v1/jobs/{job_id}"}
    assert value(samples, requests, **job, status_class="4xx") == 3
    assert value(samples, requests, method="GET", route="/health/live", status_class="2xx") == 1
    assert value(samples, requests, method="GET", route="/blog", status_class="2xx") == 2
    assert value(samples, "keel_http_request_duration_seconds_count", **job) == 3
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not {r for r in routes if r and any(str(n) in r for n in (101, 202, 303))}


async def test_queue_depth_follows_enqueues(metrics_app: Litestar, tmp_path: Path) -> None:
    async with metrics_app.state.sessionmaker() as session, session.begin():
        for _ in range(2):
            await enqueue(session, "test.record", {"path": str(tmp_path / "runs")})
        await enqueue(session, "test.record", {"path": str(tmp_path / "runs")}, delay=3600)
    samples = await scrape(metrics_app)
    depth = "keel_jobs_queue_depth"
    assert value(samples, depth, queue="default", status="queued") == 2
    assert value(samples, depth, queue="default", status="scheduled") == 1
    assert value(samples, depth, queue="default", status="running") == 0
    assert (value(samples, "keel_jobs_oldest_wait_seconds", queue="default") or 0) >= 0
    async with metrics_app.state.sessionmaker() as session, session.begin():
        await enqueue(session, "test.record", {"path": str(tmp_path / "runs")})
    samples = await scrape(metrics_app)
    assert value(samples, depth, queue="default", status="queued") == 3


async def test_job_runs_are_counted_by_type_and_outcome_with_their_waits(
    metrics_app: Litestar, settings: Settings, accounts: dict[str, User], tmp_path: Path
) -> None:
    sessionmaker = metrics_app.state.sessionmaker
    async with client_for(metrics_app) as client:
        created = await client.post(
            "/api/v1/jobs",
            json={"type": "test.file", "payload": {}},
            headers=await bearer(metrics_app, accounts["admin"]),
        )
        cancel = f"/api/v1/jobs/{created.json()['id']}/cancel"
        cancelled = await client.post(cancel, headers=await bearer(metrics_app, accounts["admin"]))
        assert cancelled.status_code == 200, cancelled.text
    async with sessionmaker() as session, session.begin():
        ok = await enqueue(session, "test.record", {"path": str(tmp_path / "runs")})
        dead = await enqueue(session, "test.slow", {})
        failed = await enqueue(session, "test.permanent", {})
    # The worker shares the app's store, as the in-process worker of embedded mode does.
    async with running_worker(settings, sessionmaker, store=metrics_app.state.store):
        await wait_for_status(sessionmaker, ok, {"succeeded"})
        await wait_for_status(sessionmaker, dead, {"dead"})
        await wait_for_status(sessionmaker, failed, {"failed"})

    samples = await scrape(metrics_app)
    runs = "keel_jobs_processed_total"
    assert value(samples, runs, type="test.record", outcome="succeeded") == 1
    assert value(samples, runs, type="test.slow", outcome="retried") == 1
    assert value(samples, runs, type="test.slow", outcome="dead") == 1
    assert value(samples, runs, type="test.permanent", outcome="failed") == 1
    assert value(samples, runs, type="test.file", outcome="cancelled") == 1
    waits = "keel_jobs_wait_seconds_count"
    assert value(samples, waits, type="test.record") == 1
    assert value(samples, waits, type="test.slow") == 2  # two attempts started
    assert value(samples, waits, type="test.file") is None  # never started
    assert value(samples, "keel_jobs_wait_seconds_bucket", type="test.slow", le="+Inf") == 2
    assert value(samples, "keel_jobs_queue_depth", queue="default", status="queued") == 0


async def test_a_scrape_served_by_another_process_shows_every_process_figures(
    services_settings: Settings, services_accounts: dict[str, User], tmp_path: Path
) -> None:
    """Two app instances and a worker on one PostgreSQL and one Valkey, as replicas are."""
    settings = with_token(services_settings)
    serving, scraped = create_app(settings), create_app(settings)
    try:
        async with client_for(serving) as client:
            assert (await client.get("/api/v1/site")).status_code == 200
        async with serving.state.sessionmaker() as session, session.begin():
            job_id = await enqueue(session, "test.record", {"path": str(tmp_path / "runs")})
        async with running_worker(settings, serving.state.sessionmaker) as worker:
            await wait_for_status(serving.state.sessionmaker, job_id, {"succeeded"})
            samples = await scrape(scraped)
            assert value(samples, "keel_workers_live") == 1
            assert worker.store is not serving.state.store
        await serving.state.figures.stop()  # what the shutdown hook does
        samples = await scrape(scraped)
        site = {"method": "GET", "route": "/api/v1/site", "status_class": "2xx"}
        assert value(samples, "keel_http_requests_total", **site) == 1
        assert (
            value(samples, "keel_jobs_processed_total", type="test.record", outcome="succeeded")
            == 1
        )
        assert value(samples, "keel_jobs_wait_seconds_count", type="test.record") == 1
        assert value(samples, "keel_workers_live") == 0
    finally:
        for application in (serving, scraped):
            await application.state.engine.dispose()
            await application.state.store.close()


async def test_the_metrics_page_is_not_a_first_run_redirect(settings: Settings) -> None:
    application = create_app(with_token(settings))
    try:
        async with client_for(application) as client:
            response = await client.get("/metrics", headers=SCRAPER)
        assert response.status_code == 200
    finally:
        await application.state.engine.dispose()
        await application.state.store.close()


async def test_a_family_added_while_keel_runs_is_scraped_until_removed(
    metrics_app: Litestar,
) -> None:
    async def switch(_: Scrape) -> list[tuple[tuple[str, ...], float]]:
        return [(("on",), 1)]

    gauge(Metric("hello_switch", "gauge", "Whether hello is on.", ("state",)), switch, "hello")
    said = stored(Metric("hello_greetings_total", "counter", "Greetings.", ("lang",)), "hello")
    try:
        tally = Tally()
        tally.add(said, ("en",), 2)
        await tally.flush(metrics_app.state.store)
        samples = await scrape(metrics_app)
        assert value(samples, "hello_switch", state="on") == 1
        assert value(samples, "hello_greetings_total", lang="en") == 2
        assert value(samples, "keel_workers_live") is not None
    finally:
        METRICS.remove("hello")
    samples = await scrape(metrics_app)
    assert not [name for name, _ in samples if name.startswith("hello_")]
    assert value(samples, "keel_workers_live") is not None
    with pytest.raises(RegistryClash, match="'keel_build_info' is already registered by 'keel'"):
        gauge(Metric("keel_build_info", "gauge", "Mine."), switch, "hello")


async def test_the_serving_process_shows_its_pools_and_page_cache(metrics_app: Litestar) -> None:
    runtime = metrics_app.state.runtime
    samples = await scrape(metrics_app)
    sizes = {
        pool: samples[("keel_db_pool_size", (("pool", pool),))] for pool in ("requests", "reads")
    }
    db = runtime.settings.db
    assert sizes["reads"] == db.read_pool_size
    if runtime.engine.dialect.name == "postgresql":
        assert sizes["requests"] == db.pool_size + db.max_overflow
    assert samples[("keel_db_pool_in_use", (("pool", "reads"),))] == 0
    assert samples[("keel_db_pool_in_use", (("pool", "requests"),))] >= 1  # the scrape's own
    generation = runtime.service(PageCache).generation
    assert samples[("keel_cache_generation", ())] == generation
    assert samples[("keel_cache_degraded", ())] == 0
