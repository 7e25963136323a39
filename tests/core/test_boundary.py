"""The input boundary: app/core/boundary.py (both storage legs).

Text PostgreSQL cannot store (NUL, lone surrogates) and bodies that cannot be decoded are
a 400 wherever they come in, on every route, before any of it reaches the database.
"""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from litestar import Litestar
from PIL import Image

from app.accounts.models import User
from app.core.boundary import (
    NOT_UTF8,
    NUL_REFUSED,
    RAW_BYTES_REFUSED,
    SURROGATE_REFUSED,
    TOO_DEEP,
)
from app.core.paths import MACHINE
from app.settings import Settings
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import count_rows, signed_in

JSON = {"content-type": "application/json"}


def refused_page(response: httpx.Response, message: str = "NUL character") -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert message in response.text


@pytest.mark.parametrize(
    "url", ["/search?q=%00", "/blog/%00", "/tags/%00", "/a%00b", "/blog?page=1&x%00=1"]
)
async def test_a_nul_in_a_pages_path_or_query_is_a_400_page_for_anyone(
    client: httpx.AsyncClient, url: str
) -> None:
    refused_page(await client.get(url))


async def test_a_nul_in_an_api_query_is_a_400_problem_for_anyone(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    body = assert_problem(await client.get("/api/v1/content?q=%00"), 400)
    assert body["detail"] == NUL_REFUSED
    async with api_as(app, accounts["admin"]) as admin:
        for url in ("/api/v1/users?q=a%00", "/api/v1/audit?action=%00", "/api/v1/media?q=%00"):
            assert_problem(await admin.get(url), 400)


async def test_nul_and_lone_surrogates_in_json_are_a_400_problem_and_store_nothing(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User], settings: Settings
) -> None:
    login = await client.post("/api/v1/auth/login", json={"login": "a\u0000b", "password": "x"})
    assert assert_problem(login, 400)["detail"] == NUL_REFUSED
    async with api_as(app, accounts["editor"]) as editor:
        for title in ("a\u0000b", "tail\u0000"):
            assert_problem(await editor.post("/api/v1/content", json={"title": title}), 400)
        lone = (b'{"title":"\\ud800"}', b'{"title":"x\\udc00y"}', b'{"title":"\\ud800\\u0041"}')
        for raw in lone:
            response = await editor.post("/api/v1/content", content=raw, headers=JSON)
            assert assert_problem(response, 400)["detail"] == SURROGATE_REFUSED
        raw_nul = b'{"title":"a\x00b"}'
        response = await editor.post("/api/v1/content", content=raw_nul, headers=JSON)
        assert assert_problem(response, 400)["detail"] == NUL_REFUSED
        own = f"/api/v1/users/{accounts['editor'].id}"
        assert_problem(await editor.patch(own, json={"display_name": "x\u0000"}), 400)
    async with api_as(app, accounts["admin"]) as admin:
        key = await admin.post("/api/v1/api-keys", json={"name": "k\u0000", "role": "viewer"})
        assert_problem(key, 400)
    assert await count_rows(settings, "entries") == 0
    assert await count_rows(settings, "api_keys") == 0


async def test_escaped_backslashes_and_surrogate_pairs_are_ordinary_text(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Only a real escape is refused: `\\\\u0000` is a backslash and the text u0000."""
    async with api_as(app, accounts["editor"]) as editor:
        raw = b'{"title":"C:\\\\u0000 and \\\\\\\\ud800 \\ud83d\\ude00"}'
        response = await editor.post("/api/v1/content", content=raw, headers=JSON)
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "C:\\u0000 and \\\\ud800 \U0001f600"


async def test_a_nul_in_a_form_field_is_a_400_page_and_stores_nothing(
    app: Litestar, accounts: dict[str, User], settings: Settings
) -> None:
    async with signed_in(app, accounts["editor"]) as editor:
        response = await editor.post(
            "/admin/content", data={"kind": "post", "title": "a\x00b", "body_markdown": "x"}
        )
        refused_page(response)
        refused_page(await editor.post("/account/profile", data={"display_name": "Ed\x00"}))
        refused_page(await editor.get("/admin/content?q=%00"))
    assert await count_rows(settings, "entries") == 0
    async with app.state.sessionmaker() as session:
        editor_row = await session.get(User, accounts["editor"].id)
    assert editor_row is not None and editor_row.display_name == "Editor"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(*parts: tuple[bytes, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand (clients escape what these tests need raw)."""
    boundary = b"keelboundary"
    body = b"".join(
        b"--"
        + boundary
        + b"\r\nContent-Disposition: form-data; "
        + head
        + b"\r\n\r\n"
        + value
        + b"\r\n"
        for head, value in parts
    )
    body += b"--" + boundary + b"--\r\n"
    return body, {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


async def test_multipart_fields_and_file_names_are_checked_but_never_file_content(
    app: Litestar, accounts: dict[str, User], settings: Settings
) -> None:
    png = _png()
    assert b"\x00" in png  # a file's bytes are its own business
    file_part = (b'name="file"; filename="dot.png"\r\nContent-Type: image/png', png)
    cases = [
        ([(b'name="alt_text"', b"a\x00b"), file_part], NUL_REFUSED),
        ([(b'name="alt_text"', b"caf\xe9"), file_part], NOT_UTF8),
        ([(b'name="file"; filename="a\x00.png"\r\nContent-Type: image/png', png)], NUL_REFUSED),
    ]
    async with api_as(app, accounts["editor"]) as editor:
        for parts, message in cases:
            body, headers = _multipart(*parts)
            response = await editor.post("/api/v1/media", content=body, headers=headers)
            assert assert_problem(response, 400)["detail"] == message
        assert await count_rows(settings, "media") == 0
        body, headers = _multipart((b'name="alt_text"', "café".encode()), file_part)
        stored = await editor.post("/api/v1/media", content=body, headers=headers)
    assert stored.status_code == 201, stored.text
    assert stored.json()["alt_text"] == "café"


@pytest.mark.parametrize("depth", [952, 100_000])
async def test_deeply_nested_json_is_a_400_problem(
    app: Litestar, accounts: dict[str, User], depth: int
) -> None:
    nested = b"[" * depth + b"]" * depth
    async with api_as(app, accounts["admin"]) as admin:
        content = await admin.post("/api/v1/content", content=nested, headers=JSON)
        job = b'{"type":"export","payload":{"x":' + nested + b"}}"
        jobs = await admin.post("/api/v1/jobs", content=job, headers=JSON)
    for response in (content, jobs):
        assert assert_problem(response, 400)["detail"] == TOO_DEEP


async def test_invalid_utf8_in_a_json_body_is_a_400_problem(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    login = await client.post(
        "/api/v1/auth/login", content=b'{"login":"\xff","password":"x"}', headers=JSON
    )
    assert assert_problem(login, 400)["detail"] == NOT_UTF8
    async with api_as(app, accounts["editor"]) as editor:
        for raw in (b'{"title":"\xed\xa0\x80"}', b'{"title":"caf\xe9"}'):
            response = await editor.post("/api/v1/content", content=raw, headers=JSON)
            assert assert_problem(response, 400)["detail"] == NOT_UTF8


@pytest.mark.parametrize("path", ["/api/v1/content", "/search", "/health/live"])
async def test_raw_bytes_in_the_query_string_are_a_400_with_a_log_line(
    app: Litestar, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """Bytes beyond ASCII unencoded in the query (some servers pass them on) used to escape
    the app: Litestar could not decode them, not even in its error handler."""
    from tests.raw_asgi import call

    with caplog.at_level(logging.INFO, logger="keel.request"):
        reply = await call(app, "GET", path.encode() + b"?q=\xff\xfe&page=\xe9")
    assert reply.status == 400
    assert b"percent-encoded" in reply.body
    assert reply.header("x-request-id") and reply.header("x-content-type-options") == "nosniff"
    lines = [r for r in caplog.records if r.name == "keel.request"]
    assert [(r.path, r.status) for r in lines] == [(path, 400)]
    if MACHINE.matches(path):  # the problem body every other error has, under the logged id
        assert reply.header("content-type") == "application/problem+json"
        problem = json.loads(reply.body)
        assert problem == {
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": RAW_BYTES_REFUSED,
            "instance": path,
            "error_id": lines[0].error_id,
        }
    else:  # a page, as the error page's plain form (the request cannot reach templates)
        assert reply.header("content-type") == "text/html; charset=utf-8"
        assert b"<h1>Bad Request</h1>" in reply.body
        assert f"Error id: {lines[0].error_id}".encode() in reply.body
