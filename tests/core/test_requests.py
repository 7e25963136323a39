"""Request ids, client addresses and the one-line JSON request log."""

from __future__ import annotations

import gc
import json
import logging
import os
from ipaddress import ip_network

import httpx
import pytest
from litestar import Litestar

from app.asgi import create_app
from app.core.logging import JsonFormatter
from app.core.requests import request_id_for, resolve_client_ip
from app.settings import Settings
from tests.conftest import client_for, with_app_settings

PROXIES = (ip_network("10.0.0.0/8"),)


async def test_every_response_carries_a_generated_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/no-such-page")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(len(i) == 32 for i in ids)


async def test_request_id_from_an_untrusted_client_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "forged-id-123"})
    assert response.headers["x-request-id"] != "forged-id-123"


async def test_request_id_from_a_trusted_proxy_is_kept(settings: Settings) -> None:
    app = create_app(with_app_settings(settings, trusted_proxies=PROXIES))
    async with client_for(app, "10.1.2.3") as proxy:
        kept = await proxy.get("/health/live", headers={"X-Request-ID": "lb-7f3a.42"})
        malformed = await proxy.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    await app.state.engine.dispose()
    assert kept.headers["x-request-id"] == "lb-7f3a.42"
    assert malformed.headers["x-request-id"] != "bad id\twith spaces"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    assert resolve_client_ip("203.0.113.9", "1.2.3.4", PROXIES) == "203.0.113.9"
    assert resolve_client_ip("10.0.0.2", "198.51.100.4, 10.0.0.9", PROXIES) == "198.51.100.4"
    assert resolve_client_ip("10.0.0.2", "6.6.6.6, 198.51.100.4", PROXIES) == "198.51.100.4"
    assert resolve_client_ip("10.0.0.2", "not-an-ip", PROXIES) == "10.0.0.2"
    assert resolve_client_ip("10.0.0.2", "1.2.3.4", ()) == "10.0.0.2"


async def test_one_json_log_line_per_request(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.get("/api/v1/site")
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "keel.request"
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == response.headers["x-request-id"]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/v1/site", 200)
    assert isinstance(line["duration_ms"], float)
    assert line["client_ip"] == "203.0.113.7"
    assert "user_id" in line and line["level"] == "info"


async def test_cors_answers_only_configured_origins(settings: Settings) -> None:
    app = create_app(with_app_settings(settings, cors_origins=("https://app.example",)))
    preflight = {"Access-Control-Request-Method": "GET"}
    async with client_for(app) as client:
        allowed = await client.options(
            "/api/v1/site", headers={"Origin": "https://app.example", **preflight}
        )
        other = await client.get("/api/v1/site", headers={"Origin": "https://evil.example"})
    await app.state.engine.dispose()
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_no_cors_headers_without_configured_origins(app: Litestar) -> None:
    async with client_for(app) as client:
        response = await client.get("/api/v1/site", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("path", ["/", "/health/live", "/api/v1/site", "/no-such-page"])
async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    plain = {"Accept-Encoding": "identity"}  # a compressed page with a fresh token varies
    get = await client.get(path, headers=plain)
    head = await client.head(path, headers=plain)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_forked_workers_never_hand_out_the_same_request_ids() -> None:
    """granian forks its workers: ids the parent had made but not used must not be used in
    a child too."""
    request_id_for(None, None, ())  # the parent holds a batch of ids now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids, leave at once
        os.write(write_end, " ".join(request_id_for(None, None, ()) for _ in range(8)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        child = set(reader.read().split())
    os.waitpid(pid, 0)
    parent = {request_id_for(None, None, ()) for _ in range(8)}
    assert len(child) == len(parent) == 8
    assert not child & parent
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in child | parent)


async def test_a_finished_request_leaves_nothing_for_the_garbage_collector(
    app: Litestar, accounts: dict
) -> None:
    """A request's objects (its scope, the chain of `send` wrappers, the caller) go when
    it is done, not at the next collection: under load, cycles piled up between
    collections, and a full collection stalled every request in flight for ~100 ms."""
    from tests.accounts.test_users_api import api_as

    async with api_as(app, accounts["editor"]) as client:
        for path in ("/api/v1/content", "/login", "/admin"):
            await client.get(path)  # first uses: caches, compiled queries
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for path in ("/api/v1/content", "/api/v1/content?fields=title", "/login", "/admin"):
                response = await client.get(path)
                assert response.status_code in (200, 303), response.text
            gc.collect()
            left = {type(thing).__name__ for thing in gc.garbage}
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    request_objects = {"BoundaryRequest", "ScopeState", "HTMXDetails", "_CompressingSend"}
    assert left.isdisjoint(request_objects), left & request_objects
