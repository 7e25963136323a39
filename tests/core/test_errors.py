"""Errors: problem details on the API, friendly pages elsewhere, error ids in the log."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import re
from dataclasses import replace

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath, FromQuery

from app.asgi import create_app
from app.core.errors import (
    KINDS,
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidField,
    NotFound,
    NotSignedIn,
    TooManyRequests,
)
from app.core.logging import JsonFormatter
from app.settings import ROOT, Settings
from tests.conftest import PASSWORD, as_production, client_for, free_port, signed_in, with_csrf
from tests.core.test_store_outage import api_key
from tests.private_valkey import private_valkey


@get("/api/v1/_test/crash", sync_to_thread=False)
def crashing_api() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/_test/crash", sync_to_thread=False)
def crashing_page() -> None:
    raise RuntimeError("secret internals: password=hunter2")


@get("/api/v1/_test/items/{item_id:int}", sync_to_thread=False)
def typed_api(item_id: FromPath[int], limit: FromQuery[int] = 10) -> dict[str, int]:
    return {"item_id": item_id, "limit": limit}


def _request_log(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name == "keel.request"]
    assert records, "no request log line"
    return records[-1]


async def test_unknown_api_path_answers_problem_details(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 404 and body["title"] == "Not Found"
    assert body["instance"] == "/api/v1/no-such-thing"
    assert len(body["error_id"]) == 16
    line = json.loads(JsonFormatter().format(_request_log(caplog)))
    assert line["error_id"] == body["error_id"]
    assert line["status"] == 404


async def test_unknown_page_renders_a_friendly_404_with_the_error_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "We could not find that page" in response.text
    assert "Error id:" in response.text
    assert 'href="/"' in response.text


async def test_invalid_parameters_answer_400_naming_the_field(app: Litestar) -> None:
    app.register(typed_api)
    async with client_for(app) as client:
        response = await client.get("/api/v1/_test/items/7?limit=lots")
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] and body["errors"][0]["field"] == "limit"
    assert "error_id" in body


async def test_wrong_method_keeps_the_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/site")
    assert response.status_code == 405
    assert "GET" in response.headers.get("allow", "")
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "path", ["/static/css", "/static/no-such.css", "/static/css/app.css/x", "/api/v1/nothing"]
)
async def test_a_404_the_framework_raises_says_a_fixed_text_and_never_a_path(
    client: httpx.AsyncClient, path: str
) -> None:
    """Litestar's static files said `no file or directory match the path /srv/…/static/css`."""
    for accept in ("application/json", "text/html"):
        response = await client.get(path, headers={"Accept": accept})
        assert response.status_code == 404
        assert str(ROOT) not in response.text and "match the path" not in response.text
    answer = await client.get(path, headers={"Accept": "application/json"})
    assert answer.json()["detail"] == "There is nothing at this address."
    wrong_method = await client.delete("/api/v1/site")
    assert wrong_method.json()["detail"] == "This address does not take this method (see Allow)."
    own = await client.get("/no-such-page", headers={"Accept": "application/json"})
    assert own.json()["detail"] == "No such page.", "Keel's own words stay"


@pytest.mark.parametrize("env", ["development", "production"])
async def test_a_crash_is_a_500_whose_body_never_carries_the_stack_trace(
    settings: Settings, accounts: dict, env: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(as_production(settings) if env == "production" else settings)
    app.register(crashing_api)
    app.register(crashing_page)
    async with client_for(app) as client:
        api = await client.get("/api/v1/_test/crash")
        page = await client.get("/_test/crash")
    await app.state.engine.dispose()
    await app.state.store.close()

    assert api.status_code == 500 and page.status_code == 500
    for response in (api, page):
        assert "hunter2" not in response.text
        assert "Traceback" not in response.text
        assert "RuntimeError" not in response.text
    assert api.json()["error_id"]
    assert "Something went wrong" in page.text
    logged = [r for r in caplog.records if r.name == "keel.errors"]
    assert logged[0].error_id == api.json()["error_id"]
    assert "hunter2" in JsonFormatter().format(
        logged[0]
    )  # the log keeps what the client must not see


FRAGMENT = {"HX-Request": "true"}
"""What htmx sends with a request that swaps part of a page (not a boosted navigation)."""


async def test_a_fragment_asked_without_a_session_signs_in_back_to_its_page(
    app: Litestar, accounts: dict
) -> None:
    """The report: the notifications count (a fragment of every signed-in page) answered
    `HX-Redirect: /login?next=/account/notifications/count`, so signing in showed the
    bare fragment. The page the person was on is htmx's HX-Current-URL."""
    async with client_for(app) as client:
        response = await client.get(
            "/account/notifications/count",
            headers={**FRAGMENT, "HX-Current-URL": "http://testserver/admin/users?role=admin"},
        )
        assert response.headers["hx-redirect"] == "/login?next=%2Fadmin%2Fusers%3Frole%3Dadmin"
        await with_csrf(client, "/login?next=%2Fadmin%2Fusers%3Frole%3Dadmin")
        signed_in = await client.post(
            "/login",
            data={"login": "admin", "password": PASSWORD, "next": "/admin/users?role=admin"},
        )
        assert signed_in.headers["location"] == "/admin/users?role=admin"
        page = await client.get(signed_in.headers["location"])
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")


@pytest.mark.parametrize(
    ("headers", "location"),
    [
        # htmx's own account of the page comes first, the Referer is the fallback
        (
            {"HX-Current-URL": "http://testserver/account", "Referer": "http://testserver/"},
            "/login?next=%2Faccount",
        ),
        (
            {"Referer": "http://testserver/admin/jobs?status=queued"},
            "/login?next=%2Fadmin%2Fjobs%3Fstatus%3Dqueued",
        ),
        (
            {"HX-Current-URL": "http://evil.example/x", "Referer": "http://testserver/blog"},
            "/login?next=%2Fblog",
        ),
        # never another site, another scheme, or a path a browser reads as another host
        ({"HX-Current-URL": "http://evil.example/admin"}, "/login"),
        ({"HX-Current-URL": "https://testserver/admin"}, "/login"),
        ({"HX-Current-URL": "http://testserver.evil.example/admin"}, "/login"),
        ({"HX-Current-URL": "http://user@evil.example@testserver/admin"}, "/login"),
        ({"HX-Current-URL": "javascript://testserver/%0aalert(1)"}, "/login"),
        ({"HX-Current-URL": "http://testserver/\t/evil.example/x"}, "/login"),
        ({"HX-Current-URL": "http://testserver/\\evil.example/x"}, "/login"),
        ({"Referer": "https://evil.example/admin"}, "/login"),
        ({}, "/login"),
        # this site's origin however it is written, as the CSRF check reads it
        ({"Referer": "http://TestServer:80/admin/users"}, "/login?next=%2Fadmin%2Fusers"),
    ],
)
async def test_a_fragments_sign_in_link_returns_only_to_a_page_of_this_site(
    client: httpx.AsyncClient, headers: dict[str, str], location: str
) -> None:
    response = await client.get("/account/notifications/count", headers={**FRAGMENT, **headers})
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == location


async def test_a_form_posted_without_a_session_signs_in_back_to_the_form_page(
    client: httpx.AsyncClient,
) -> None:
    await with_csrf(client)
    plain = await client.post(
        "/account/profile",
        data={"display_name": "x"},
        headers={"Referer": "http://testserver/account?tab=profile"},
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == "/login?next=%2Faccount%3Ftab%3Dprofile"
    htmx = await client.post(
        "/account/profile",
        data={"display_name": "x"},
        headers={**FRAGMENT, "HX-Boosted": "true", "HX-Current-URL": "http://testserver/account"},
    )
    assert htmx.headers["hx-redirect"] == "/login?next=%2Faccount"


async def test_a_page_asked_without_a_session_signs_in_back_to_itself(
    client: httpx.AsyncClient,
) -> None:
    """A navigation (plain or boosted by htmx) goes to the page it asked for, wherever it
    came from."""
    plain = await client.get("/admin/users?q=caf%C3%A9", headers={"Referer": "http://testserver/"})
    assert plain.headers["location"] == "/login?next=%2Fadmin%2Fusers%3Fq%3Dcaf%25C3%25A9"
    boosted = await client.get(
        "/admin/users",
        headers={**FRAGMENT, "HX-Boosted": "true", "HX-Current-URL": "http://testserver/blog"},
    )
    assert boosted.headers["hx-redirect"] == "/login?next=%2Fadmin%2Fusers"


def _error_id(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("application/problem+json"):
        return str(response.json()["error_id"])
    found = re.search(r"Error id: <code>([0-9a-f]{16})</code>", response.text)
    assert found, response.text
    return found.group(1)


def assert_one_warning_line_each(
    caplog: pytest.LogCaptureFixture, responses: list[httpx.Response]
) -> None:
    """Each 503 is one warning line naming its error id, path and cause, and nothing logs
    a traceback: an outage is expected, not a bug."""
    assert {r.status_code for r in responses} == {503}
    logged = [r for r in caplog.records if r.name == "keel.errors"]
    assert [r.levelname for r in logged] == ["WARNING"] * len(responses)
    for record, response in zip(logged, responses, strict=True):
        assert record.error_id == _error_id(response)
        assert record.path == response.url.path
        assert record.error_type and record.error
        line = JsonFormatter().format(record)
        assert "\n" not in line and len(line) < 1024, line
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [], "a traceback was logged"


def database_down(settings: Settings) -> Settings:
    """The leg's settings with a database that does not answer (refused at once)."""
    if settings.db.is_sqlite:
        url = "sqlite+aiosqlite:////proc/keel-no-such-dir/keel.db"
    else:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/keel"
    return replace(settings, db=replace(settings.db, url=url, connect_timeout=1.0))


async def test_a_database_outage_is_one_warning_line_per_answer_without_a_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(database_down(settings))
    caplog.set_level(logging.INFO)
    async with client_for(app) as client:
        responses = [await client.get("/api/v1/site"), await client.get("/")]
    await app.state.engine.dispose()
    await app.state.store.close()
    assert_one_warning_line_each(caplog, responses)


async def test_a_store_outage_is_one_warning_line_per_answer_without_a_traceback(
    settings: Settings, accounts: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with private_valkey() as valkey:
        app = create_app(valkey.settings(settings, socket_timeout=0.5))
        app.register(crashing_api)
        key = {"X-API-Key": await api_key(app, accounts["admin"])}
        async with signed_in(app, accounts["viewer"]) as browser:
            valkey.pause()
            caplog.set_level(logging.INFO)
            responses = [await browser.get("/account") for _ in range(3)]
            responses.append(await browser.get("/account", headers={"Accept": "application/json"}))
            assert_one_warning_line_each(caplog, responses)
            caplog.clear()
            # the API's rate limit fails open: the request is let through, one line each
            for _ in range(2):
                assert (await browser.get("/api/v1/content", headers=key)).status_code == 200
            limited = [r for r in caplog.records if r.name == "keel.throttle"]
            assert [r.levelname for r in limited] == ["WARNING"] * 2
            assert [r.getMessage() for r in caplog.records if r.exc_info] == [], "a traceback"
            caplog.clear()
            crash = await browser.get("/api/v1/_test/crash")
        await app.state.engine.dispose()
        await app.state.store.close()
    assert crash.status_code == 500
    (logged,) = [r for r in caplog.records if r.name == "keel.errors"]
    assert logged.levelname == "ERROR" and logged.exc_info, "a bug keeps its traceback"
    assert "Traceback" in JsonFormatter().format(logged)


def _domain_errors() -> list[type[DomainError]]:
    """Every DomainError subclass Keel defines (its modules imported: create_app loads them)."""
    for module in pkgutil.walk_packages(importlib.import_module("app").__path__, "app."):
        importlib.import_module(module.name)
    found, todo = [], [DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("app.") and sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def test_every_domain_error_is_exactly_one_kind_and_sets_no_status_of_its_own() -> None:
    """The status of a refusal comes from its kind (app/core/errors.py); a domain's family
    root (ContentError, AccountError...) is no kind itself and only groups its kinds."""
    errors = [error for error in _domain_errors() if error not in KINDS]
    assert len(errors) > 20
    for error in errors:
        kinds = [kind for kind in KINDS if issubclass(error, kind)]
        if not kinds:
            assert error.__subclasses__(), f"{error.__qualname__} is no kind and no family"
            continue
        assert len(kinds) == 1, f"{error.__qualname__} is {kinds}"
        assert "status" not in vars(error), f"{error.__qualname__} sets a status"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidField("Give it a title.", "title"), 400),
        (InvalidField("Invalid payload.", "payload", status=422), 422),
        (NotFound("No such entry."), 404),
        (Forbidden("You cannot give this role.", "role"), 403),
        (Conflict("Another post already uses this address.", "slug"), 409),
        (NotSignedIn("This refresh token was already used."), 401),
        (Gone("The result file has expired and was removed."), 410),
        (TooManyRequests("Too many attempts.", 60), 429),
    ],
)
async def test_each_kind_answers_its_status_with_the_message_and_the_field(
    app: Litestar, error: DomainError, status: int
) -> None:
    @get("/api/v1/_test/refused", sync_to_thread=False)
    def refused() -> None:
        raise error

    app.register(refused)
    async with client_for(app) as client:
        answer = await client.get("/api/v1/_test/refused")
    assert answer.status_code == status
    body = answer.json()
    assert body["status"] == status and body["detail"] == error.message
    if error.field:
        assert body["errors"] == [{"field": error.field, "message": error.message}]
    else:
        assert "errors" not in body
    if isinstance(error, TooManyRequests):
        assert answer.headers["retry-after"] == "60"


def site_menu(html: str) -> list[str]:
    """The links of the site's main menu, by their text."""
    nav = html.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    return [text.strip() for text in re.findall(r">([^<>]+)</(?:a|button)>", nav)]


def admin_menu(html: str) -> list[str]:
    """The links of the admin menu, by their text."""
    nav = html.split('<nav aria-label="Admin">', 1)[1].split("</nav>", 1)[0]
    return [text.strip() for text in re.findall(r">([^<>]+)</a>", nav)]


async def test_a_404_shows_the_sites_menu_and_who_is_signed_in_like_other_pages(
    app: Litestar, accounts: dict
) -> None:
    """On the public site (a page that is not there) the error page has the site's title,
    its pages in the menu and the signed-in state; under /admin (no route matches: no
    middleware ran) staff see it in the admin layout, with their admin menu, never "Sign
    in"; its sign-out form works."""
    from app.accounts.services.audit import Actor
    from app.content.services.entries import EntryInput, publish_entry, save_entry
    from app.site_settings.services import write_setting

    admin = accounts["admin"]
    async with app.state.sessionmaker() as session, session.begin():
        actor = Actor(admin.id, admin.username)
        about = await save_entry(session, actor, EntryInput(kind="page", title="About"))
        about.nav_order = 1
        await publish_entry(session, actor, about)
        await write_setting(session, "site_title", "Harbour Notes")
    await app.state.page_cache.invalidate()
    async with client_for(app) as visitor:
        anonymous = await visitor.get("/no/such/page")
    async with signed_in(app, admin) as client:
        home = await client.get("/")
        dashboard = await client.get("/admin")
        under_admin = await client.get("/admin/no-such-page")
        public = await client.get("/blog/no-such-post")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', under_admin.text)
        assert token is not None and token.group(1)
        client.headers.pop("X-CSRF-Token")
        signed_out = await client.post("/logout", data={"_csrf_token": token.group(1)})
    assert signed_out.status_code == 303
    assert public.status_code == 404
    assert site_menu(public.text) == site_menu(home.text)
    assert "About" in site_menu(public.text) and "Sign in" not in site_menu(public.text)
    assert "Harbour Notes</a>" in public.text
    assert under_admin.status_code == 404
    assert admin_menu(under_admin.text) == admin_menu(dashboard.text)
    assert {"Dashboard", "Settings", "Account"} <= set(admin_menu(under_admin.text))
    assert "Sign in" not in under_admin.text and "Sign out" in under_admin.text
    assert site_menu(anonymous.text) == ["Home", "Blog", "About", "Sign in"]


async def test_a_404_while_the_database_is_down_is_a_404_with_the_bare_menu(
    settings: Settings,
) -> None:
    app = create_app(database_down(settings))
    try:
        async with client_for(app) as client:
            client.cookies.set("keel_session", "a-session-the-store-does-not-know")
            response = await client.get("/no/such/page")
    finally:
        await app.state.engine.dispose()
        await app.state.store.close()
    assert response.status_code == 404
    assert "We could not find that page" in response.text
    assert site_menu(response.text) == ["Home", "Blog", "Sign in"]
