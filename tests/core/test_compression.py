"""Compression of text responses: app/core/compression.py, and the page cache's variants
compressed at fill (app/content/pages/cache.py). Both legs."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import AsyncIterator

import brotli
import httpx
import pytest
from litestar import Litestar, Response, get
from litestar.response import Stream

from app.asgi import create_app
from app.core.compression import is_compressible, negotiate
from app.settings import ROOT, Settings
from tests.conftest import client_for

counter = itertools.count()
PARAGRAPH = "<p>Keel keeps every capability and drops the network hops.</p>\n" * 30


def _page() -> str:
    return f"<h1>render {next(counter)}</h1>{PARAGRAPH}"


cached_page = get(
    "/_test/zip/cached", opt={"public_cache": True}, sync_to_thread=False, media_type="text/html"
)(_page)
live_page = get("/_test/zip/live", name="zip:live", sync_to_thread=False, media_type="text/html")(
    _page
)


@get("/_test/zip/small", sync_to_thread=False, media_type="text/plain")
def small_page() -> str:
    return "short"


@get("/_test/zip/image", sync_to_thread=False)
def image() -> Response[bytes]:
    return Response(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, media_type="image/png")


@get("/_test/zip/stream", sync_to_thread=False)
def streamed() -> Stream:
    async def lines() -> AsyncIterator[str]:
        for n in range(50):
            yield f"line {n}: {PARAGRAPH[:80]}\n"

    return Stream(lines(), media_type="text/plain")


async def _app(settings: Settings) -> Litestar:
    app = create_app(settings)
    for route in (cached_page, live_page, small_page, image, streamed):
        app.register(route)
    return app


async def _raw(client: httpx.AsyncClient, path: str, **headers: str) -> httpx.Response:
    """The response with its body as sent (httpx decodes `content`; `raw` is kept)."""
    request = client.build_request("GET", path, headers=headers)
    response = await client.send(request, stream=True)
    response.raw = b"".join([chunk async for chunk in response.aiter_raw()])  # type: ignore[attr-defined]
    await response.aclose()
    return response


def _decoded(response: httpx.Response) -> bytes:
    raw: bytes = response.raw  # type: ignore[attr-defined]
    coding = response.headers.get("content-encoding")
    if coding == "br":
        return bytes(brotli.decompress(raw))
    if coding == "gzip":
        return gzip.decompress(raw)
    assert coding is None, coding
    return raw


@pytest.mark.parametrize(
    ("accept", "cached", "live"),
    [
        ("gzip, deflate, br, zstd", "br", "gzip"),  # what Chromium sends
        ("gzip", "gzip", "gzip"),
        ("br", "br", "br"),
        ("identity", None, None),
        (None, None, None),
        ("br;q=0, gzip", "gzip", "gzip"),
        ("gzip;q=0.5, br;q=0.8", "br", "br"),
        ("gzip;q=0, br;q=0", None, None),
        ("*", "br", "gzip"),
        ("*;q=0", None, None),
    ],
)
async def test_the_encoding_follows_accept_encoding_and_decodes_to_the_identity_body(
    settings: Settings, accounts: dict, accept: str | None, cached: str | None, live: str | None
) -> None:
    """A cached page is kept in brotli and gzip (brotli preferred on a tie); a response
    compressed as it is sent prefers gzip on a tie (as small at a fast setting, cheaper)."""
    app = await _app(settings)
    headers = {"Accept-Encoding": accept or ""}
    async with app.lifespan(), client_for(app) as client:
        for path, expected in (("/_test/zip/cached", cached), ("/_test/zip/live", live)):
            plain = await _raw(client, path, **{"Accept-Encoding": ""})
            answer = await _raw(client, path, **headers)
            assert answer.status_code == 200
            assert answer.headers.get("content-encoding") == expected, (path, accept)
            assert "Accept-Encoding" in answer.headers["vary"]
            assert "Accept-Encoding" in plain.headers["vary"]
            assert int(answer.headers["content-length"]) == len(answer.raw)  # type: ignore[attr-defined]
            body = _decoded(answer)
            if path.endswith("cached"):
                assert body == plain.raw  # type: ignore[attr-defined]
            else:  # rendered again: only the counter differs
                assert body.split(b"</h1>")[1] == plain.raw.split(b"</h1>")[1]  # type: ignore[attr-defined]
            if expected is not None:
                assert len(answer.raw) < len(body) / 4  # type: ignore[attr-defined]


def test_q_values_are_read_as_rfc_9110_says() -> None:
    assert negotiate(b"gzip;q=1.0, br;q=0.9") == "gzip"
    assert negotiate(b"GZIP;Q=0.2, *;q=0.1") == "gzip"
    assert negotiate(b"br;q=abc, gzip;q=0.1") == "gzip"  # an unreadable weight refuses
    assert negotiate(b"x-gzip") == "gzip"
    assert negotiate(b"deflate, zstd") is None
    assert negotiate(b" , ;q=1") is None


def test_text_types_are_compressible_and_compressed_types_are_not() -> None:
    for text in (b"text/html; charset=utf-8", b"application/atom+xml", b"application/rss+xml"):
        assert is_compressible(text)
    for kept in (b"application/problem+json", b"image/svg+xml", b"text/css", b"text/javascript"):
        assert is_compressible(kept)
    for packed in (b"image/png", b"image/webp", b"application/zip", b"text/event-stream", b""):
        assert not is_compressible(packed)


async def test_a_cached_hit_sends_the_bytes_compressed_at_fill_and_304s_and_heads_agree(
    settings: Settings, accounts: dict
) -> None:
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        for accept in ("br", "gzip"):
            fill = await _raw(
                client, "/_test/zip/cached?v=" + accept, **{"Accept-Encoding": accept}
            )
            hit = await _raw(client, "/_test/zip/cached?v=" + accept, **{"Accept-Encoding": accept})
            assert (fill.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
            assert hit.headers["content-encoding"] == accept
            assert hit.raw == fill.raw  # type: ignore[attr-defined]
            assert hit.headers["etag"] == fill.headers["etag"]
            assert hit.headers["etag"].startswith('W/"')
            head = await client.head(
                "/_test/zip/cached?v=" + accept, headers={"Accept-Encoding": accept}
            )
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-encoding"] == accept
            assert head.headers["content-length"] == hit.headers["content-length"]
            for asked in (accept, "identity"):  # one weak ETag stands for every encoding
                again = await client.get(
                    "/_test/zip/cached?v=" + accept,
                    headers={"Accept-Encoding": asked, "If-None-Match": hit.headers["etag"]},
                )
                assert again.status_code == 304 and again.content == b""
                assert "Accept-Encoding" in again.headers["vary"]


async def test_another_process_serves_the_compressed_page_from_the_store(
    services_settings: Settings, services_accounts: dict
) -> None:
    """The variants travel with the page through Valkey: a second process's hit does no
    compression work and sends the same bytes."""
    first, second = await _app(services_settings), await _app(services_settings)
    async with (
        first.lifespan(),
        second.lifespan(),
        client_for(first) as a,
        client_for(second) as b,
    ):
        path = f"/_test/zip/cached?run={next(counter)}"
        fill = await _raw(a, path, **{"Accept-Encoding": "br"})
        other = await _raw(b, path, **{"Accept-Encoding": "br"})
        other_gzip = await _raw(b, path, **{"Accept-Encoding": "gzip"})
        plain = await _raw(b, path, **{"Accept-Encoding": ""})
    assert fill.headers["x-cache"] == "miss" and other.headers["x-cache"] == "hit"
    assert other.raw == fill.raw  # type: ignore[attr-defined]
    assert _decoded(other_gzip) == plain.raw == _decoded(fill)  # type: ignore[attr-defined]


async def test_static_files_are_compressed_once_and_range_requests_are_not(
    settings: Settings, accounts: dict
) -> None:
    app = await _app(settings)
    htmx = (ROOT / "static" / "js" / "htmx.min.js").read_bytes()
    async with app.lifespan(), client_for(app) as client:
        plain = await _raw(client, "/static/js/htmx.min.js", **{"Accept-Encoding": ""})
        assert plain.raw == htmx and plain.headers["etag"].startswith('"')  # type: ignore[attr-defined]
        answers = [
            await _raw(client, "/static/js/htmx.min.js", **{"Accept-Encoding": "gzip, br"})
            for _ in range(2)
        ]
        for answer in answers:
            assert answer.headers["content-encoding"] == "gzip"
            assert _decoded(answer) == htmx
            assert answer.headers["etag"] == "W/" + plain.headers["etag"]
            assert "accept-ranges" not in answer.headers
            assert len(answer.raw) < len(htmx) / 2  # type: ignore[attr-defined]
        assert answers[0].raw == answers[1].raw  # type: ignore[attr-defined]
        ranged = await _raw(
            client, "/static/js/htmx.min.js", **{"Accept-Encoding": "br", "Range": "bytes=0-99"}
        )
        assert "content-encoding" not in ranged.headers
        assert htmx.startswith(ranged.raw)  # type: ignore[attr-defined]


async def test_small_bodies_images_and_streams(settings: Settings, accounts: dict) -> None:
    """Small bodies and images go as they are; a stream is compressed as it goes."""
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        small = await _raw(client, "/_test/zip/small", **{"Accept-Encoding": "br"})
        assert "content-encoding" not in small.headers and small.raw == b"short"  # type: ignore[attr-defined]
        picture = await _raw(client, "/_test/zip/image", **{"Accept-Encoding": "gzip, br"})
        assert "content-encoding" not in picture.headers
        assert "vary" not in picture.headers or "accept-encoding" not in picture.headers["vary"]
        plain = await _raw(client, "/_test/zip/stream", **{"Accept-Encoding": ""})
        for accept in ("gzip", "br"):
            stream = await _raw(client, "/_test/zip/stream", **{"Accept-Encoding": accept})
            assert stream.headers["content-encoding"] == accept
            assert _decoded(stream) == plain.raw  # type: ignore[attr-defined]


async def test_json_and_public_pages_are_compressed(settings: Settings, accounts: dict) -> None:
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        for path in ("/", "/blog", "/schema/openapi.json", "/static/css/app.css"):
            plain = await _raw(client, path, **{"Accept-Encoding": ""})
            answer = await _raw(client, path, **{"Accept-Encoding": "gzip, br"})
            assert answer.status_code == 200, path
            assert answer.headers["content-encoding"] in ("br", "gzip"), path
            assert _decoded(answer) == plain.raw, path  # type: ignore[attr-defined]


async def test_head_of_a_compressed_response_has_the_get_headers_and_no_body(
    settings: Settings, accounts: dict
) -> None:
    app = await _app(settings)
    async with app.lifespan(), client_for(app) as client:
        for path in ("/static/css/app.css", "/_test/zip/stream", "/login"):
            got = await _raw(client, path, **{"Accept-Encoding": "gzip"})
            head = await client.head(path, headers={"Accept-Encoding": "gzip"})
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["content-encoding"] == got.headers["content-encoding"] == "gzip"
            assert head.headers.get("content-length") == got.headers.get("content-length"), path
