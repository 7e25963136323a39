"""The public page cache: app/content/services/page_cache.py and app/content/pages/cache.py
(both legs; cross-process on Valkey)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import replace
from datetime import timedelta
from ipaddress import ip_network

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.params import FromQuery

from app.accounts.models import User
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.content.services.entries import EntryInput, publish_entry, save_entry
from app.content.services.page_cache import GENERATION_KEY, RETRY_SECONDS, STOP_SECONDS
from app.core.clock import current_clock
from app.core.logging import JsonFormatter
from app.core.store import create_store
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import SteppedClock, api_token, client_for, free_port, signed_in, stopped_clock
from tests.core.test_store_outage import api_key, published_post
from tests.private_valkey import PrivateValkey, private_valkey

counter = itertools.count()


@get("/_test/cached", opt={"public_cache": True}, sync_to_thread=False, media_type="text/html")
def cached_page() -> str:
    return f"<p>render {next(counter)}</p>"


@get("/_test/uncached", sync_to_thread=False, media_type="text/html")
def uncached_page() -> str:
    return f"<p>render {next(counter)}</p>"


@get("/_test/edited-while-rendering", opt={"public_cache": True}, media_type="text/html")
async def page_edited_while_rendering(request: Request) -> str:
    """Reads what it shows, then a public change commits (elsewhere) before it is sent."""
    shown = f"<p>render {next(counter)}</p>"
    await request.app.state.page_cache.invalidate()
    return shown


@get("/_test/rendered-until", opt={"public_cache": True}, media_type="text/html")
async def page_rendered_until(at: FromQuery[float]) -> str:
    """Reads what it shows, then is still rendering at the moment `at` (epoch seconds)."""
    shown = f"<p>render {next(counter)}</p>"
    _pass(at)
    return shown


def _pass(at: float) -> None:
    """Move the (stopped) clock of the running request or test just past `at`."""
    clock = current_clock()
    assert isinstance(clock, SteppedClock)
    clock.advance(timedelta(seconds=max(at - clock.time(), 0) + 0.1))


async def _app(settings: Settings) -> Litestar:
    app = create_app(settings)
    app.register(cached_page)
    app.register(uncached_page)
    app.register(page_edited_while_rendering)
    app.register(page_rendered_until)
    return app


async def test_anonymous_pages_are_served_from_the_cache_with_etags(
    settings: Settings, accounts: dict
) -> None:
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        first = await client.get("/_test/cached")
        second = await client.get("/_test/cached")
        assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
        assert first.text == second.text
        etag = second.headers["etag"]
        assert etag == first.headers["etag"]
        not_modified = await client.get("/_test/cached", headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        other_query = await client.get("/_test/cached?page=2")
        assert other_query.headers["x-cache"] == "miss"
        plain = await client.get("/_test/uncached")
        assert "x-cache" not in plain.headers


async def test_hits_answered_before_routing_keep_head_cors_and_the_common_headers(
    settings: Settings, accounts: dict
) -> None:
    """A page the process holds is answered in front of the router (PageCacheFront): HEAD,
    the request id and security headers still apply, and a cross-origin read goes through
    Litestar so CORS answers it."""
    origin = "https://app.example"
    app = await _app(replace(settings, app=replace(settings.app, cors_origins=(origin,))))
    async with app.lifespan(), client_for(app) as client:
        first = await client.get("/_test/cached")
        hit = await client.get("/_test/cached")
        assert hit.headers["x-cache"] == "hit" and hit.text == first.text
        assert hit.headers["x-request-id"] and hit.headers["x-content-type-options"] == "nosniff"
        head = await client.head("/_test/cached")
        assert head.status_code == 200 and head.content == b"", head.headers
        assert head.headers["x-cache"] == "hit"
        cross = await client.get("/_test/cached", headers={"Origin": origin})
        assert cross.headers["access-control-allow-origin"] == origin
        assert cross.headers["x-cache"] == "hit" and cross.text == first.text


@get("/_test/cached-long", opt={"public_cache": True}, sync_to_thread=False, media_type="text/html")
def cached_long_page() -> str:
    """A page long enough to be kept compressed."""
    return f"<p>render {next(counter)}</p>" + "<p>Keel keeps every capability.</p>" * 40


async def test_a_hit_answered_in_front_sends_what_the_full_path_sends(
    settings: Settings, accounts: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """PageCacheFront answers a hit before the request-context and security-header layers
    and must add what they would: the same headers as the rendered answer in every
    encoding, for HEAD and for a 304, a trusted proxy's request id, and the log line."""
    proxies = (ip_network("10.0.0.0/8"),)
    app = await _app(replace(settings, app=replace(settings.app, trusted_proxies=proxies)))
    app.register(cached_long_page)
    caplog.set_level(logging.INFO, logger="keel.request")
    ignored = {"x-cache", "x-request-id", "date"}

    def kept(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in ignored}

    async with app.lifespan(), client_for(app, "10.1.2.3") as client:
        for coding in ("br", "gzip", "identity"):
            asked = {"Accept-Encoding": coding}
            miss = await client.get("/_test/cached-long", headers=asked)
            hit = await client.get("/_test/cached-long", headers=asked)
            assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
            assert kept(hit) == kept(miss) and hit.content == miss.content, coding
            assert hit.headers.get("content-encoding", "identity") == coding
            await app.state.page_cache.invalidate()
        await client.get("/_test/cached-long")
        hit = await client.get("/_test/cached-long", headers={"X-Request-ID": "lb-7f3a.42"})
        assert hit.headers["x-request-id"] == "lb-7f3a.42"
        assert (
            hit.headers["content-security-policy"]
            and "strict-transport-security" not in hit.headers
        )
        head = await client.head("/_test/cached-long")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == hit.headers["content-length"]
        assert head.headers["x-content-type-options"] == "nosniff"
        etag = {"If-None-Match": hit.headers["etag"]}
        not_modified = await client.get("/_test/cached-long", headers=etag)
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["x-cache"] == "hit"
        assert not_modified.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert "content-length" not in not_modified.headers
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "keel.request" and r.__dict__.get("request_id") == "lb-7f3a.42"
    ]
    assert len(lines) == 1
    assert (lines[0]["method"], lines[0]["path"], lines[0]["status"]) == (
        "GET",
        "/_test/cached-long",
        200,
    )
    methods = [r.__dict__.get("method") for r in caplog.records if r.name == "keel.request"]
    assert "HEAD" in methods


async def test_a_page_rendered_before_a_change_is_never_kept_under_the_new_generation(
    settings: Settings, accounts: dict
) -> None:
    """A page whose content was read before a public change, and which finished rendering
    after it, would otherwise be stored under the new generation and served stale until
    its TTL ran out."""
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        first = await client.get("/_test/edited-while-rendering")
        again = await client.get("/_test/edited-while-rendering")
        assert first.headers["x-cache"] == "miss"
        assert again.headers["x-cache"] == "miss" and again.text != first.text


async def scheduled_post(app: Litestar, author: User, seconds: float) -> float:
    """A post that becomes public `seconds` from now (its cache invalidation done);
    returns that moment (epoch seconds)."""
    at = current_clock().now() + timedelta(seconds=seconds)
    async with app.state.sessionmaker() as session, session.begin():
        actor = Actor(author.id, author.username)
        entry = await save_entry(session, actor, EntryInput(title="Soon public"))
        await publish_entry(session, actor, entry, at)
    await app.state.events.deliver(session)
    return at.timestamp()


async def test_a_page_still_rendering_when_a_scheduled_post_goes_public_is_not_kept(
    settings: Settings, accounts: dict
) -> None:
    """The next publication is read before the page renders: read after, it is already the
    one after it, and the page, whose content predates the post, would be kept until its
    TTL ran out with the post missing."""
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        with stopped_clock(app):
            at = await scheduled_post(app, accounts["editor"], 1.0)
            first = await client.get(f"/_test/rendered-until?at={at}")
            again = await client.get(f"/_test/rendered-until?at={at}")
            assert first.headers["x-cache"] == "miss"
            assert again.headers["x-cache"] == "miss" and again.text != first.text


async def test_a_value_still_loading_when_a_scheduled_post_goes_public_is_not_kept(
    settings: Settings, accounts: dict
) -> None:
    """The same for values kept in the process (the site settings and the menu)."""
    app = await _app(settings)
    async with app.lifespan():
        with stopped_clock(app):
            at = await scheduled_post(app, accounts["editor"], 1.0)
            loads = itertools.count()

            async def load_until_published() -> int:
                value = next(loads)
                _pass(at)
                return value

            cache = app.state.page_cache
            assert await cache.remember("menu", load_until_published) == 0
            assert await cache.remember("menu", load_until_published) == 1, "kept past it"


async def test_signed_in_visitors_bypass_the_cache(settings: Settings, accounts: dict) -> None:
    app = await _app(settings)
    async with app.lifespan(), signed_in(app, accounts["viewer"]) as browser:
        first = await browser.get("/_test/cached")
        second = await browser.get("/_test/cached")
    assert "x-cache" not in first.headers and first.text != second.text


async def test_a_setting_change_invalidates_after_commit(
    settings: Settings, accounts: dict
) -> None:
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        await client.get("/_test/cached")
        assert (await client.get("/_test/cached")).headers["x-cache"] == "hit"
        async with app.state.sessionmaker() as session, session.begin():
            await write_setting(session, "site_title", "Renamed")
        await app.state.events.deliver(session)
        assert (await client.get("/_test/cached")).headers["x-cache"] == "miss"


async def test_an_invalidation_reaches_every_process_at_once(
    services_settings: Settings, services_accounts: dict
) -> None:
    """Two app processes sharing one Valkey: a change on one empties the other's cache."""
    settings = services_settings
    first, second = await _app(settings), await _app(settings)
    async with first.lifespan(), second.lifespan(), client_for(second) as b:
        await b.get("/_test/cached")
        assert (await b.get("/_test/cached")).headers["x-cache"] == "hit"
        await first.state.page_cache.invalidate()
        for _ in range(50):  # pushed through pub/sub: well under the 2 s fallback
            if second.state.page_cache.generation == first.state.page_cache.generation:
                break
            await asyncio.sleep(0.02)
        assert second.state.page_cache.generation == first.state.page_cache.generation
        assert (await b.get("/_test/cached")).headers["x-cache"] == "miss"


async def test_pages_are_served_uncached_when_valkey_is_down(
    services_settings: Settings, services_accounts: dict
) -> None:
    settings = services_settings
    down = replace(
        settings, store=replace(settings.store, url=f"redis://127.0.0.1:{free_port()}/0")
    )
    app = await _app(down)
    async with client_for(app) as client:
        responses = [await client.get("/_test/cached") for _ in range(2)]
    await app.state.engine.dispose()
    assert all(r.status_code == 200 for r in responses)
    assert responses[0].text != responses[1].text  # rendered each time
    assert app.state.page_cache.degraded
    async with client_for(app) as client:
        ready = (await client.get("/health/ready")).json()
    assert ready["cache"] == {"status": "degraded"}


@pytest.mark.parametrize("ttl", [0])
async def test_a_zero_ttl_turns_the_cache_off(settings: Settings, accounts: dict, ttl: int) -> None:
    app = await _app(replace(settings, app=replace(settings.app, cache_ttl=ttl)))
    async with app.lifespan(), client_for(app) as client:
        response = await client.get("/_test/cached")
    assert "x-cache" not in response.headers


async def test_public_api_reads_are_cached_for_anonymous_clients_only(
    app: Litestar, accounts: dict
) -> None:
    from app.accounts.services.audit import Actor
    from app.content.services.entries import EntryInput, publish_entry, save_entry

    editor = accounts["editor"]
    async with app.state.sessionmaker() as session, session.begin():
        entry = await save_entry(
            session, Actor(editor.id, "editor"), EntryInput(title="Cached API")
        )
        await publish_entry(session, Actor(editor.id, "editor"), entry)
    token = await api_token(app, editor)
    async with app.lifespan(), client_for(app) as client:
        first = await client.get("/api/v1/content")
        second = await client.get("/api/v1/content")
        assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
        assert second.json()["items"][0]["title"] == "Cached API"
        signed = await client.get("/api/v1/content", headers={"Authorization": f"Bearer {token}"})
        assert "x-cache" not in signed.headers
        # a change through the API invalidates after its commit
        patched = await client.patch(
            f"/api/v1/content/{entry.id}",
            json={"title": "Renamed API"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert patched.status_code == 200
        third = await client.get("/api/v1/content")
        assert third.headers["x-cache"] == "miss"
        assert third.json()["items"][0]["title"] == "Renamed API"


async def test_site_settings_kept_in_process_follow_a_change_made_elsewhere(
    services_settings: Settings, services_accounts: dict
) -> None:
    """Each process keeps the site title and menu in memory; a change in another process
    reaches it with the invalidation, even for pages that bypass the page cache."""
    first, second = await _app(services_settings), await _app(services_settings)
    viewer = services_accounts["viewer"]
    async with first.lifespan(), second.lifespan(), signed_in(second, viewer) as browser:
        assert "Renamed elsewhere" not in (await browser.get("/")).text
        async with first.state.sessionmaker() as session, session.begin():
            await write_setting(session, "site_title", "Renamed elsewhere")
        await first.state.events.deliver(session)
        for _ in range(50):
            if second.state.page_cache.generation == first.state.page_cache.generation:
                break
            await asyncio.sleep(0.02)
        assert "Renamed elsewhere" in (await browser.get("/")).text


async def serves_the_edit_within(client: object, page: str, seconds: float) -> None:
    """Poll `page` until it shows the edit; fail once `seconds` have passed."""
    started = time.monotonic()
    while "After the pause." not in (await client.get(page)).text:  # type: ignore[attr-defined]
        assert time.monotonic() - started < seconds, "still the page from before the edit"
        await asyncio.sleep(0.05)


async def test_an_edit_made_while_the_store_is_paused_reaches_every_process_once_it_answers(
    settings: Settings, accounts: dict
) -> None:
    """Two processes on one database and a private redis-server: an edit published through
    A while the store is paused is what A and B serve within seconds of the store answering
    again, and the pages cached before it never come back."""
    with private_valkey() as valkey:
        shared = valkey.settings(settings)
        first, second = await _app(shared), await _app(shared)
        slug = await published_post(first, accounts["editor"])
        key = {"X-API-Key": await api_key(first, accounts["admin"])}
        page = f"/blog/{slug}"
        async with (
            first.lifespan(),
            second.lifespan(),
            client_for(first) as a,
            client_for(second) as b,
        ):
            for visitor in (a, b):
                await visitor.get(page)
                assert (await visitor.get(page)).headers["x-cache"] == "hit"
            entry = (await a.get("/api/v1/content", headers=key)).json()["items"][0]
            valkey.pause()
            edited = await a.patch(
                f"/api/v1/content/{entry['id']}",
                json={"body_markdown": "After the pause."},
                headers=key,
            )
            assert edited.status_code == 200
            # B cannot hear of the edit now; once it re-reads the generation (every 2 s) it
            # finds the store away and renders pages uncached
            await serves_the_edit_within(b, page, 10)
            valkey.resume()
            for visitor in (a, b):
                await serves_the_edit_within(visitor, page, 10)
            await asyncio.sleep(2.5)  # a process re-reads the generation every 2 s
            for visitor in (a, b):
                for _ in range(3):
                    response = await visitor.get(page)
                    assert "After the pause." in response.text
                assert response.headers["x-cache"] == "hit", "the cache is in use again"
        for app in (first, second):
            await app.state.engine.dispose()
            await app.state.store.close()


async def change_entry(client: object, change: str, entry_id: str, key: dict) -> object:
    """Make a change visitors see through the API: "edit" (the title to "After the
    change"), "unpublish" or "delete"; returns the response."""
    base = f"/api/v1/content/{entry_id}"
    if change == "edit":
        return await client.patch(base, json={"title": "After the change"}, headers=key)  # type: ignore[attr-defined]
    if change == "unpublish":
        return await client.post(base + "/unpublish", headers=key)  # type: ignore[attr-defined]
    return await client.delete(base, headers=key)  # type: ignore[attr-defined]


@pytest.mark.parametrize("change", ["edit", "unpublish", "delete"])
async def test_a_change_committed_while_the_store_refuses_writes_succeeds_and_reaches_visitors(
    settings: Settings, accounts: dict, change: str
) -> None:
    """A full Valkey (or a read-only replica) answers, but refuses the new generation after
    the COMMIT: the change is made, so the answer is a success, not a 500, and the new
    generation is owed: pages are rendered fresh meanwhile, and cached again once the
    store takes writes."""
    with private_valkey() as valkey:
        app = await _app(valkey.settings(settings))
        await published_post(app, accounts["editor"], title="Before the change")
        key = {"X-API-Key": await api_key(app, accounts["admin"])}
        async with app.lifespan(), client_for(app) as visitor:
            await visitor.get("/blog")
            assert (await visitor.get("/blog")).headers["x-cache"] == "hit"
            entry = (await visitor.get("/api/v1/content", headers=key)).json()["items"][0]
            valkey.refuse_writes()
            response = await change_entry(visitor, change, entry["id"], key)
            assert response.status_code in (200, 204), response.text  # type: ignore[attr-defined]
            blog = await visitor.get("/blog")
            assert blog.status_code == 200 and "Before the change" not in blog.text
            valkey.refuse_writes(False)
            started = time.monotonic()
            while (blog := await visitor.get("/blog")).headers["x-cache"] != "hit":
                assert time.monotonic() - started < 10, "the cache is not used again"
                await asyncio.sleep(0.05)
            assert "Before the change" not in blog.text
        await app.state.engine.dispose()
        await app.state.store.close()


async def stored_generation(valkey: PrivateValkey, settings: Settings) -> int:
    store = create_store(valkey.settings(settings).store)
    try:
        return int(await store.get(GENERATION_KEY) or 0)
    finally:
        await store.close()


async def test_a_generation_still_owed_is_stored_when_the_process_stops(
    settings: Settings, accounts: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The store takes writes again, but the owed generation's next try is not due yet when
    the process is told to stop: it is stored on the way out, not dropped."""
    with private_valkey() as valkey:
        app = await _app(valkey.settings(settings))
        await published_post(app, accounts["editor"])
        key = {"X-API-Key": await api_key(app, accounts["admin"])}
        async with app.lifespan(), client_for(app) as client:
            entry = (await client.get("/api/v1/content", headers=key)).json()["items"][0]
            before = await stored_generation(valkey, settings)
            valkey.refuse_writes()
            assert (await change_entry(client, "edit", entry["id"], key)).status_code == 200
            assert app.state.page_cache.degraded
            await asyncio.sleep(RETRY_SECONDS / 5)  # refused again; the next try is not due
            caplog.set_level(logging.INFO)
            valkey.refuse_writes(False)
            await app.state.page_cache.stop()  # the first thing the app's shutdown does
            assert await stored_generation(valkey, settings) == before + 1
            assert "owed cache generation started" in caplog.messages
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_a_process_that_stops_owing_a_generation_says_so_within_a_bounded_time(
    settings: Settings, accounts: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The store is still away when the process is told to stop: it waits a moment for it,
    then logs, as an error, that the change may not reach the other processes' caches."""
    with private_valkey() as valkey:
        app = await _app(valkey.settings(settings, socket_timeout=0.5))
        await published_post(app, accounts["editor"])
        key = {"X-API-Key": await api_key(app, accounts["admin"])}
        caplog.set_level(logging.INFO)
        async with app.lifespan(), client_for(app) as client:
            entry = (await client.get("/api/v1/content", headers=key)).json()["items"][0]
            valkey.pause()
            assert (await change_entry(client, "edit", entry["id"], key)).status_code == 200
            stopping = time.monotonic()
        took = time.monotonic() - stopping
        valkey.resume()
        assert took < STOP_SECONDS + 10, f"stopping took {took:.1f} s"
        (owed,) = [r for r in caplog.records if "stopping with a new cache generation" in r.msg]
        assert owed.levelname == "ERROR" and not owed.exc_info
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_a_job_s_public_change_during_a_store_pause_reaches_the_web_processes(
    settings: Settings, accounts: dict
) -> None:
    """A worker that committed a public change while the store was paused starts the new
    generation once the store answers, though no web process noticed the pause."""
    from tests.jobs.conftest import running_worker, wait_for_status
    from tests.jobs.test_imports import upload

    with private_valkey() as valkey:
        shared = valkey.settings(settings)
        app = create_app(shared)
        async with app.lifespan(), client_for(app) as visitor:
            assert "Hello World" not in (await visitor.get("/blog")).text
            assert (await visitor.get("/blog")).headers["x-cache"] == "hit"
            csv = "kind,title,slug,body,tags,status,publish_at,nav_order\n"
            created = await upload(
                app,
                visitor,
                accounts["editor"],
                "content",
                csv + "post,Hello World,,,,published,,\n",
            )
            assert created.status_code == 201, created.text
            valkey.pause()
            async with running_worker(shared, app.state.sessionmaker):
                job = await wait_for_status(
                    app.state.sessionmaker, created.json()["id"], {"succeeded"}
                )
                assert job.status == "succeeded"
                valkey.resume()
                started = time.monotonic()
                while "Hello World" not in (await visitor.get("/blog")).text:
                    assert time.monotonic() - started < 10, "the blog from before the import"
                    await asyncio.sleep(0.05)
        await app.state.engine.dispose()
        await app.state.store.close()
