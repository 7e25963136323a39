"""Hostile input on every route: never a 5xx, and never SQL, a path or a stack frame in a body.

The walk reads the app itself (its registered routes with their methods, path and query
parameters and JSON body types, and the forms its pages render), so a new route, parameter
or form field is covered without editing this module. Every parameter, field and body gets
the classes of bad input that outside testing found (issue 12): NUL bytes, lone surrogates,
invalid UTF-8, integers past every column type and negative ones, times past what a
datetime holds, deeply nested JSON, NaN and Infinity, 100 KB strings, path traversal, line
breaks and characters outside Latin-1; every operation also gets hostile header values
(HX-Current-URL, Referer, Origin, Accept-Language, ...); anonymously and as a signed-in admin
(session cookie and CSRF token on pages, a bearer token on the API). Pages are asked for
HTML and, every other request, for JSON (the problem body says more than the error page).

Each operation starts with a benign request (the baseline): as the admin, it must succeed
(or be in UNREACHED, with the reason), so that the bad values meet the handlers and not
only a refusal in front of them.

Requests go through the app's own ASGI interface as raw bytes (not httpx), so a path can
carry `../` and a query raw bytes, as they arrive from a real socket.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msgspec
import pytest
from litestar import Litestar
from litestar.enums import RequestEncodingType
from litestar.routes import HTTPRoute

from app.accounts.models import User
from app.asgi import create_app
from app.core.paths import MACHINE
from app.settings import ROOT, Settings
from app.site_settings.services import write_setting
from tests.conftest import (
    PASSWORD,
    api_token,
    client_for,
    fresh,
    signed_in,
    with_app_settings,
    with_csrf,
)
from tests.content.test_media import image_bytes
from tests.raw_asgi import Reply, call

LEAKS = (
    "Traceback",
    'File "',
    "INSERT ",
    "SELECT ",
    "UPDATE ",
    "DELETE FROM",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "psycopg",
    "/work/",
    str(ROOT),
)
"""What no answer may show: SQL, driver names, stack frames, the checkout's path."""


# -- the classes of bad input -----------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One bad value, as it is written in each place it can go."""

    name: str
    url: bytes
    """In a path segment, a query string or an urlencoded form (percent-encoded)."""
    raw: bytes
    """As the bytes of a multipart field or a file name."""
    json: bytes
    """As a JSON value."""
    integer: bool = False


def _text(name: str, raw: bytes, url: bytes | None = None, json_value: bytes | None = None):
    return Hostile(
        name,
        url if url is not None else quote(raw, safe="").encode(),
        raw,
        json_value if json_value is not None else b'"' + raw + b'"',
    )


def _number(name: str, value: int) -> Hostile:
    digits = str(value).encode()
    return Hostile(name, digits, digits, digits, integer=True)


LONG = b"x" * 100_000
TEXT = (
    _text("NUL", b"a\x00b", json_value=b'"a\\u0000b"'),
    _text("lone surrogate", b"\xed\xa0\x80", json_value=b'"a\\ud800b"'),
    _text("invalid UTF-8", b"\xff\xfex"),
    _text("100 KB string", LONG),
    _text("traversal", b"../../../../etc/passwd", url=b"../../../../etc/passwd"),
    _text("double-encoded traversal", b"%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    _text("line break", b"a\r\nX-Injected: 1"),
    _text("beyond Latin-1", "\u200b\u0430\U0001f600".encode()),
)
DATES = (
    _text("time past UTC's range", b"9999-12-31T23:00:00-05:00"),
    _text("time before UTC's range", b"0001-01-01T00:30:00+01:00"),
    _text("day that does not exist", b"2030-02-30"),
)
"""For every text, query parameter and form field (times come in as text there)."""
INTEGERS = (
    _number("2^31", 2**31),
    _number("2^63", 2**63),
    _number("4.6e17", 460_000_000_000_000_000),
    _number("-1", -1),
)
EVERY = TEXT + DATES + INTEGERS
IN_PATHS = (
    *EVERY,
    _text("encoded traversal", b"../../../../etc/passwd", url=b"%2e%2e%2f" * 4 + b"etc%2fpasswd"),
)
"""A path segment also gets `../` percent-encoded, which a query or a form decodes to the
plain traversal already tried."""

DEEP = 1_500
WHOLE_JSON_BODIES = {
    f"JSON arrays {DEEP} deep": b"[" * DEEP + b"]" * DEEP,
    f"JSON objects {DEEP} deep": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "JSON arrays 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "raw NUL in a JSON string": b'{"title": "a\x00b"}',
    "invalid UTF-8 in a JSON key": b'{"\xff\xfe": 1}',
    "truncated JSON": b'{"title": ',
    "JSON number 1e999": b'{"title": 1e999}',
    "JSON NaN": b'{"title": NaN, "nav_order": NaN, "payload": {"a": NaN}}',
    "JSON Infinity": b'{"title": Infinity, "priority": -Infinity, "days": Infinity}',
    "JSON null": b"null",
    "JSON string": b'"\\u0000"',
    "not JSON": b"\x00\xff\xfe",
}
WHOLE_FORM_BODIES = {
    "raw invalid UTF-8 form": b"a=\xff\xfe&b=\xed\xa0\x80&q=\xff",
    "raw NUL form": b"a=\x00&q=\x00",
    "not a form": b"\x00\xff" + LONG,
}
FILE_NAMES = (
    ("traversal file name", b"../../../../tmp/keel-probe.png"),
    ("NUL file name", b"a\x00b.png"),
    ("invalid UTF-8 file name", b"\xff\xfe.png"),
    ("100 KB file name", LONG + b".png"),
    ("line break file name", b"a\r\nb.png"),
)
CSV_WITH_BAD_BYTES = b"title,kind,nav_order,email\r\na\x00b,post,9223372036854775808,\xff\xfe\r\n"


# -- who calls --------------------------------------------------------------------------------


@dataclass
class Caller:
    """Anonymous, or the admin: a session cookie and CSRF token for pages, a bearer token for
    the API (each only where it belongs)."""

    name: str
    cookie: str
    csrf: str
    bearer: str | None = None

    def headers(self, path: bytes) -> list[tuple[bytes, bytes]]:
        found = [(b"cookie", self.cookie.encode()), (b"x-csrf-token", self.csrf.encode())]
        if self.bearer and MACHINE.matches(path.decode("latin-1")):
            found.append((b"authorization", f"Bearer {self.bearer}".encode()))
        return found


async def anonymous(app: Litestar) -> Caller:
    async with client_for(app) as client:
        token = await with_csrf(client)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return Caller("anonymous", cookie, token)


async def admin(app: Litestar, user: User) -> Caller:
    """A new session and token for the admin as the database has it now (a walk may have
    signed them out, everywhere)."""
    user = await fresh(app, user)
    async with signed_in(app, user) as client:
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        token = client.headers["X-CSRF-Token"]
    return Caller("admin", cookie, token, await api_token(app, user))


async def still_signed_in(app: Litestar, caller: Caller) -> bool:
    api = await call(app, "GET", b"/api/v1/auth/me", caller.headers(b"/api/v1/auth/me"))
    page = await call(app, "GET", b"/account", caller.headers(b"/account"))
    return api.status == 200 and page.status == 200


# -- what the app offers ----------------------------------------------------------------------


@dataclass
class Form:
    """A form as a browser would send it: its fields' default values, its file fields."""

    encoding: str
    fields: dict[str, str] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)
    upload: tuple[bytes, bytes] | None = None
    """The file a benign request sends (name, content); None: a PNG image."""


IMPORT_CSV = (b"probe.csv", b"kind,title\r\npost,Imported probe\r\n")


@dataclass
class Operation:
    method: str
    route: HTTPRoute
    path_params: dict[str, str]
    """name → converter (`uuid`, `int`, `str`, `path`)."""
    query: list[str]
    json_type: Any = None
    form: Form | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.route.path}"


PARAM = re.compile(r"\{(\w+):(\w+)\}")


def operations(app: Litestar) -> list[Operation]:
    """Every method of every route the app registered, with what it reads."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, kwargs) in sorted(route.route_handler_map.items()):
            if method in ("HEAD", "OPTIONS"):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            op = Operation(
                method,
                route,
                dict(PARAM.findall(route.path)),
                sorted(p.field_alias for p in kwargs.expected_query_params),
            )
            if kwargs.expected_form_data is not None:
                encoding = kwargs.expected_form_data[0]
                op.form = Form(
                    "multipart" if encoding == RequestEncodingType.MULTI_PART else "urlencoded"
                )
                struct_fields = _fields(data.annotation) if data is not None else {}
                op.form.fields = {
                    name: _baseline(name, kind) for name, kind in struct_fields.items()
                }
                op.form.files = {name for name, kind in struct_fields.items() if _is_upload(kind)}
                for name in op.form.files:
                    op.form.fields.pop(name, None)
                if route.path.endswith("/import"):  # a CSV of content, not an image
                    op.form.fields["kind"], op.form.upload = "content", IMPORT_CSV
            elif data is not None:
                op.json_type = data.annotation
            found.append(op)
    return found


def _info(annotation: Any) -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(annotation)


def _fields(annotation: Any) -> dict[str, msgspec.inspect.Type]:
    info = _info(annotation)
    while isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    return {f.name: f.type for f in getattr(info, "fields", ())}


def _is_upload(kind: msgspec.inspect.Type) -> bool:
    return isinstance(kind, msgspec.inspect.CustomType)


def _kinds(kind: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    if isinstance(kind, msgspec.inspect.UnionType):
        return [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
    return [kind]


KNOWN_VALUES: dict[str, Any] = {
    "login": "admin",
    "password": PASSWORD,
    "current_password": PASSWORD,
    "new_password": PASSWORD + " again",
    "new_password_confirm": PASSWORD + " again",
    "password_confirm": PASSWORD,
    "role": "viewer",
    "kind": "post",
    "type": "export",
    "payload": {"dataset": "content", "format": "csv"},
}
"""Valid values for fields whose name says what they need; every other text is `probe`."""


def _unique(name: str) -> str | None:
    """Values that must not clash with an earlier operation's (an account's address and
    name, an entry's title): new for each operation."""
    made = uuid.uuid4().hex[:8]
    return {
        "email": f"probe-{made}@example.org",
        "username": f"probe-{made}",
        "title": f"Probe {made}",
    }.get(name)


def _baseline(name: str, kind: msgspec.inspect.Type) -> Any:
    if name in KNOWN_VALUES:
        return KNOWN_VALUES[name]
    if (unique := _unique(name)) is not None:
        return unique
    first = _kinds(kind)[0]
    if isinstance(first, msgspec.inspect.IntType):
        return max(first.ge or 1, 1)
    if isinstance(first, msgspec.inspect.BoolType):
        return False
    if isinstance(first, msgspec.inspect.UUIDType):
        return str(uuid.uuid4())
    if isinstance(first, msgspec.inspect.DateTimeType):
        return "2031-01-01T00:00:00+00:00"
    if isinstance(first, (msgspec.inspect.ListType, msgspec.inspect.SetType)):
        return ["probe"]
    if isinstance(first, msgspec.inspect.DictType):
        return {}
    if isinstance(first, msgspec.inspect.LiteralType):
        return first.values[0]
    if isinstance(first, msgspec.inspect.EnumType):
        return next(iter(first.cls)).value
    return "probe"


class FormReader(HTMLParser):
    """The POST forms of a page (and elements that post themselves with `hx-post`): action,
    encoding, fields with the values a browser sends (an empty text box gets a plausible
    value, so that the other fields get checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, Form]] = []
        self._current: Form | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "get").lower() == "post":
            multipart = "multipart" in a.get("enctype", "")
            self._current = Form("multipart" if multipart else "urlencoded")
            self.forms.append((a.get("action", ""), self._current))
        if a.get("hx-post") and a.get("name"):  # an element that posts itself (htmx)
            self.forms.append((a["hx-post"], Form("urlencoded", {a["name"]: a.get("value", "")})))
        form = self._current
        if form is None:
            return
        if tag == "option" and self._select:
            if "selected" in a or not form.fields.get(self._select):
                form.fields[self._select] = a.get("value", "")
            return
        name = a.get("name")
        if not name:
            return
        if tag == "input":
            kind = a.get("type", "text")
            if kind == "file":
                form.files.add(name)
            elif kind in ("checkbox", "radio"):
                if "checked" in a or name not in form.fields:
                    form.fields[name] = a.get("value", "on")
            elif kind != "submit":
                form.fields[name] = a.get("value") or _fill(name, kind)
        elif tag == "select":
            self._select = name
            form.fields.setdefault(name, "")
        elif tag == "textarea":
            self._textarea = name
            form.fields[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._current is not None and self._textarea:
            self._current.fields[self._textarea] += data


def _fill(name: str, kind: str) -> str:
    if isinstance(KNOWN_VALUES.get(name), str):
        return KNOWN_VALUES[name]
    if (unique := _unique(name if kind != "email" else "email")) is not None:
        return unique
    filled = {
        "number": "1",
        "password": PASSWORD,
        "date": "2031-01-01",
        "datetime-local": "2031-01-01T09:00",
    }
    return filled.get(kind, "probe")


CONVERTED = {"uuid": "[0-9a-fA-F-]{36}", "int": "-?[0-9]+", "path": ".+"}


def _pattern(template: str) -> str:
    """A regular expression for the paths a route template matches."""
    parts, last = [], 0
    for match in PARAM.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(CONVERTED.get(match.group(2), "[^/]+"))
        last = match.end()
    return "".join(parts) + re.escape(template[last:])


def route_of(ops: list[Operation], method: str, path: str) -> Operation | None:
    return next(
        (op for op in ops if op.method == method and re.fullmatch(_pattern(op.route.path), path)),
        None,
    )


# -- the app under test -----------------------------------------------------------------------


@pytest.fixture
async def hostile_app(
    settings: Settings, accounts: dict[str, User], tmp_path: Path
) -> AsyncIterator[Litestar]:
    """The set-up app, its media in this test's folder, with no API rate limit or sign-in
    throttle to run into (the walk's own failed sign-ins would throttle the benign ones)."""
    auth = replace(settings.auth, login_max_failures=10**6, login_max_failures_per_ip=10**6)
    settings = replace(settings, auth=auth)
    application = create_app(with_app_settings(settings, media_dir=tmp_path / "media"))
    async with application.state.sessionmaker() as session, session.begin():
        await write_setting(session, "api_rate_limit_per_minute", 1_000_000)
    yield application
    await application.state.engine.dispose()
    await application.state.store.close()


async def seed(app: Litestar, accounts: dict[str, User]) -> dict[str, str]:
    """One of each thing a route can name (a post and a page, their tag and revision, a
    media file, an API key, a job; the viewer's account), so requests get past "no such
    thing" to the code behind."""
    admin_user = await fresh(app, accounts["admin"])
    token = await api_token(app, admin_user)
    ids: dict[str, str] = {"file_path": "css/app.css", "path": "openapi.json"}
    unique = uuid.uuid4().hex[:8]
    async with client_for(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        user = await client.post(
            "/api/v1/users",
            json={"email": f"{unique}@example.org", "username": f"probe-{unique}",
                  "password": PASSWORD, "role": "viewer"},
        )  # fmt: skip
        assert user.status_code == 201, user.text
        ids["user_id"] = user.json()["id"]
        for kind in ("post", "page"):
            made = await client.post(
                "/api/v1/content",
                json={"title": f"Seeded {unique}", "kind": kind, "tags": [f"Seeded {unique}"],
                      "body_markdown": "x"},
            )  # fmt: skip
            entry = made.json()
            assert made.status_code == 201, made.text
            await client.post(f"/api/v1/content/{entry['id']}/publish")
            ids.update(entry_id=entry["id"], slug=entry["slug"])
        revisions = await client.get(f"/api/v1/content/{ids['entry_id']}/revisions")
        ids["revision_id"] = revisions.json()[0]["id"]
        media = await client.post(
            "/api/v1/media", files={"file": ("probe.png", image_bytes("PNG"), "image/png")}
        )
        assert media.status_code == 201, media.text
        ids.update(media_id=media.json()["id"], name=media.json()["url"].rsplit("/", 1)[1])
        key = await client.post("/api/v1/api-keys", json={"name": "probe", "role": "viewer"})
        ids["key_id"] = key.json()["id"]
        job = await client.post(
            "/api/v1/jobs",
            json={"type": "export", "payload": {"dataset": "content", "format": "csv"}},
        )
        assert job.status_code == 201, job.text
        ids["job_id"] = str(job.json()["id"])
    ids["key"] = "site_title"  # a runtime setting (/api/v1/settings/{key})
    return ids


def fallback_id(converter: str) -> str:
    return {"uuid": str(uuid.uuid4()), "int": "1", "path": "css/app.css"}.get(converter, "made-up")


# -- the requests of one walk -----------------------------------------------------------------


@dataclass
class Probe:
    case: str
    method: str
    target: bytes
    content_type: bytes | None = None
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


BASELINE = "baseline"
HOSTILE_HEADERS = (
    b"hx-request",
    b"hx-current-url",
    b"referer",
    b"origin",
    b"accept-language",
    b"user-agent",
    b"x-forwarded-for",
    b"x-request-id",
    b"if-none-match",
)
HOSTILE_HEADER_VALUES = {
    "100 KB": b"http://testserver/" + LONG,
    "invalid UTF-8": b"http://testserver/\xff\xfe?next=\xed\xa0\x80",
    "beyond Latin-1": "http://testserver/\u200b\u0430?next=/\U0001f600".encode(),
    "malformed URL": b"http://[::1:x/%zz",
    "backslashes": b"/\\evil.example\\x",
}
"""Every header the app reads from a request (besides credentials), all set to one value."""


def target_for(op: Operation, ids: dict[str, str], replace: dict[str, bytes] | None = None):
    replace = replace or {}

    def value(match: re.Match[str]) -> str:
        name, converter = match.group(1), match.group(2)
        if name in replace:
            return replace[name].decode("latin-1")
        return quote(ids.get(name) or fallback_id(converter), safe="/")

    return PARAM.sub(value, op.route.path).encode("latin-1")


def probes(op: Operation, ids: dict[str, str]) -> Iterator[Probe]:
    """Every case for one operation: each value in each parameter, field and body."""
    body_type, body = baseline_body(op)
    plain = target_for(op, ids)
    yield Probe(BASELINE, op.method, plain, body_type, body)
    for case, value in HOSTILE_HEADER_VALUES.items():
        headers = [(name, value) for name in HOSTILE_HEADERS]
        yield Probe(f"headers: {case}", op.method, plain, body_type, body, headers)
    for name, converter in op.path_params.items():
        for bad in IN_PATHS:
            target = target_for(op, ids, {name: bad.url})
            yield Probe(f"path {name}={bad.name}", op.method, target, body_type, body)
        if converter == "path":  # a name below a file that exists: not a folder
            below = quote(ids.get(name) or fallback_id(converter), safe="/") + "/x"
            target = target_for(op, ids, {name: below.encode()})
            yield Probe(f"path {name}=below a file", op.method, target, body_type, body)
    for name in op.query:
        for bad in EVERY:
            target = plain + b"?" + name.encode() + b"=" + bad.url
            yield Probe(f"query {name}={bad.name}", op.method, target, body_type, body)
    yield Probe(
        "raw bytes in the query", op.method, plain + b"?q=\xff\xfe\x00&page=\xff", body_type, body
    )
    if op.json_type is not None:
        yield from json_probes(op, plain)
    if op.form is not None:
        yield from form_probes(op, plain)


JSON = b"application/json"
URLENCODED = b"application/x-www-form-urlencoded"
BOUNDARY = b"keel-hostile-probe"
MULTIPART = b"multipart/form-data; boundary=" + BOUNDARY


def baseline_body(op: Operation) -> tuple[bytes | None, bytes]:
    if op.json_type is not None:
        return JSON, json.dumps(json_baseline(op)).encode()
    if op.form is not None and op.form.encoding == "multipart":
        return MULTIPART, multipart(op.form, {})
    if op.form is not None:
        return URLENCODED, urlencode(op.form.fields).encode()
    return None, b""


def json_baseline(op: Operation) -> dict[str, Any]:
    fields = _fields(op.json_type)
    info = _info(op.json_type)
    while isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    required = {f.name for f in getattr(info, "fields", ()) if f.required}
    return {
        name: _baseline(name, kind)
        for name, kind in fields.items()
        if name in required or name in KNOWN_VALUES or _unique(name)
    }


def _splice(document: dict[str, Any], name: str, value: bytes) -> bytes:
    """`document` as JSON with `name` set to the raw JSON `value` (which json.dumps could not
    write: invalid UTF-8, integers past 64 bits as such)."""
    marker = f"@@{uuid.uuid4().hex}@@"
    return json.dumps({**document, name: marker}).encode().replace(f'"{marker}"'.encode(), value)


def json_probes(op: Operation, target: bytes) -> Iterator[Probe]:
    base = json_baseline(op)
    for name, kind in _fields(op.json_type).items():
        kinds = _kinds(kind)
        texts = any(
            isinstance(k, (msgspec.inspect.StrType, msgspec.inspect.DateTimeType)) for k in kinds
        )
        numbers = any(isinstance(k, msgspec.inspect.IntType) for k in kinds)
        lists = any(
            isinstance(k, (msgspec.inspect.ListType, msgspec.inspect.SetType)) for k in kinds
        )
        dicts = any(
            isinstance(k, (msgspec.inspect.DictType, msgspec.inspect.AnyType)) for k in kinds
        )
        for bad in EVERY:
            if (bad.integer and numbers) or (not bad.integer and texts):
                value = bad.json
            elif lists:
                value = b"[" + bad.json + b"]"
            elif dicts:
                value = b'{"dataset": ' + bad.json + b', "days": ' + bad.json + b"}"
            else:
                continue
            yield Probe(
                f"json {name}={bad.name}", op.method, target, JSON, _splice(base, name, value)
            )
        if numbers or dicts:
            for not_a_number in (b"NaN", b"-Infinity"):
                body = _splice(base, name, not_a_number)
                yield Probe(f"json {name}={not_a_number.decode()}", op.method, target, JSON, body)
        if dicts or lists:
            deep = b"[" * DEEP + b"1" + b"]" * DEEP
            yield Probe(
                f"json {name}=nested {DEEP} deep",
                op.method,
                target,
                JSON,
                _splice(base, name, deep),
            )
    for case, body in WHOLE_JSON_BODIES.items():
        yield Probe(case, op.method, target, JSON, body)


def _encode_form(fields: dict[str, str], name: str | None = None, value: bytes = b"") -> bytes:
    parts = []
    for key, text in fields.items():
        encoded = value if key == name else quote(text, safe="").encode()
        parts.append(quote(key, safe="").encode() + b"=" + encoded)
    return b"&".join(parts)


def multipart(
    form: Form,
    replace: dict[str, bytes],
    file_name: bytes | None = None,
    content: bytes | None = None,
) -> bytes:
    upload_name, upload = form.upload or (b"probe.png", image_bytes("PNG"))
    file_name = upload_name if file_name is None else file_name
    parts = []
    for key, text in form.fields.items():
        value = replace.get(key, text.encode())
        parts.append(
            b"--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="'
            + key.encode()
            + b'"\r\n\r\n'
            + value
            + b"\r\n"
        )
    for key in sorted(form.files):
        parts.append(
            b"--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="'
            + key.encode()
            + b'"; filename="'
            + file_name
            + b'"\r\nContent-Type: image/png\r\n\r\n'
            + (content if content is not None else upload)
            + b"\r\n"
        )
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def form_probes(op: Operation, target: bytes) -> Iterator[Probe]:
    form = op.form
    assert form is not None
    names = [name for name in form.fields if not name.startswith("_csrf")]
    if form.encoding == "urlencoded":
        for name in names:
            for bad in EVERY:
                body = _encode_form(form.fields, name, bad.url)
                yield Probe(f"form {name}={bad.name}", op.method, target, URLENCODED, body)
        if not names:  # no page renders this form: its handler reads fields we cannot know
            for bad in TEXT:
                body = _encode_form({**form.fields, "probe": ""}, "probe", bad.url)
                yield Probe(f"form field={bad.name}", op.method, target, URLENCODED, body)
        for case, body in WHOLE_FORM_BODIES.items():
            yield Probe(case, op.method, target, URLENCODED, body)
        return
    for name in names:
        for bad in EVERY:
            body = multipart(form, {name: bad.raw})
            yield Probe(f"multipart {name}={bad.name}", op.method, target, MULTIPART, body)
    if form.files:
        for case, file_name in FILE_NAMES:
            yield Probe(case, op.method, target, MULTIPART, multipart(form, {}, file_name))
        for case, content in (("empty file", b""), ("CSV with bad bytes", CSV_WITH_BAD_BYTES)):
            body = multipart(form, {}, b"probe.csv", content)
            yield Probe(case, op.method, target, MULTIPART, body)
    yield Probe(
        "raw bytes multipart", op.method, target, MULTIPART, b"--" + BOUNDARY + b"\r\n\xff\x00"
    )


# -- the walk ---------------------------------------------------------------------------------


class LastError(logging.Handler):
    """The exception behind the latest 5xx (keel.errors logs it), to name it in a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = repr(record.exc_info[1])[:300]


SHOWN_ON_PURPOSE = {
    "GET /admin": ("aiosqlite", "asyncpg"),
    "GET /admin/system": ("aiosqlite", "asyncpg", "/work/", str(ROOT)),
}
"""What a page shows its reader on purpose: the dashboard's system panel names the database
(its URL without a password); the system page (admins only) also shows the configuration,
with the data and plugin folders' paths."""


def problem_in(reply: Reply, errors: LastError, label: str = "") -> str | None:
    if reply.status >= 500:
        cause, errors.last = errors.last, ""
        return f"{reply.status} ({cause or reply.body[:200]!r})"
    text = reply.body.decode("utf-8", "replace")
    if reply.status < 300:
        for shown in SHOWN_ON_PURPOSE.get(label, ()):
            text = text.replace(shown, "")
    for leak in LEAKS:
        if leak in text:
            at = text.index(leak)
            return f"{reply.status} shows {leak!r}: …{text[max(0, at - 120) : at + 120]!r}…"
    if reply.header("x-injected"):
        return f"{reply.status} carries an injected header"
    return None


ACCEPT = (b"text/html,application/xhtml+xml,*/*;q=0.8", b"application/json")
"""Every other request asks for JSON: on a page, the problem body instead of the error page."""

DESTRUCTIVE = re.compile(
    r"delete|revoke|deactivate|logout|sign-out|cancel|archive|unpublish|password"
)


def walk_order(op: Operation) -> tuple[int, str]:
    """Whatever removes things or signs out goes last, so the rest meets the seeded rows."""
    destructive = op.method == "DELETE" or bool(DESTRUCTIVE.search(op.route.path))
    return (destructive, op.label)


async def discover_forms(app: Litestar, ops: list[Operation], caller: Caller, ids: dict[str, str]):
    """The forms the pages render for `caller` give each form route its fields."""
    for op in ops:
        if op.method != "GET" or op.path_params.keys() - ids.keys() - {"file_path", "path"}:
            continue
        target = target_for(op, ids)
        if target.startswith((b"/api", b"/static", b"/schema", b"/health", b"/metrics")):
            continue
        reply = await call(app, "GET", target, caller.headers(target))
        if reply.status != 200 or b"<form" not in reply.body:
            continue
        reader = FormReader()
        reader.feed(reply.body.decode("utf-8", "replace"))
        for action, form in reader.forms:
            found = route_of(ops, "POST", urlsplit(action).path or target.decode())
            if found is not None and found.form is not None:
                for name, value in form.fields.items():
                    found.form.fields.setdefault(name, value)
                found.form.files |= form.files


@dataclass
class Walk:
    """One caller's walk over every operation; `renew` signs the caller in again (None for
    anonymous callers, who have nothing to lose)."""

    app: Litestar
    accounts: dict[str, User]
    caller: Caller
    renew: Callable[[], Awaitable[Caller]] | None
    ids: dict[str, str]
    problems: list[str] = field(default_factory=list)
    count: int = 0
    baselines: dict[str, int] = field(default_factory=dict)
    """Each operation's benign request: the status it answered."""

    async def run(self) -> None:
        ops = sorted(operations(self.app), key=walk_order)
        for viewer in (self.caller, await anonymous(self.app)):  # the sign-in form too
            await discover_forms(self.app, ops, viewer, self.ids)
        errors = LastError()
        logging.getLogger("keel.errors").addHandler(errors)
        try:
            for op in ops:
                if walk_order(op)[0]:  # what an earlier one removed or ended exists again
                    self.ids = await seed(self.app, self.accounts)
                    if self.renew is not None:
                        self.caller = await self.renew()
                await self.operation(op, errors)
        finally:
            logging.getLogger("keel.errors").removeHandler(errors)

    async def operation(self, op: Operation, errors: LastError) -> None:
        """Every probe of `op`; if it signed the caller out, all of them again, each signed
        in afresh, so every case is tried as the admin."""
        batch = list(probes(op, self.ids))
        for again in (False, True):
            failures = []
            for number, probe in enumerate(batch):
                if again and self.renew is not None:
                    self.caller = await self.renew()
                headers = [*self.caller.headers(probe.target), *probe.headers]
                if probe.content_type:
                    headers.append((b"content-type", probe.content_type))
                headers.append((b"accept", ACCEPT[number % 2]))
                reply = await call(self.app, probe.method, probe.target, headers, probe.body)
                self.count += 1
                if probe.case == BASELINE and not again:
                    self.baselines[op.label] = reply.status
                if (problem := problem_in(reply, errors, op.label)) is not None:
                    failures.append(f"{self.caller.name} {op.label} [{probe.case}]: {problem}")
            if self.renew is None or await still_signed_in(self.app, self.caller):
                break
            self.caller = await self.renew()
        self.problems.extend(failures)


UNREACHED = {
    "GET /admin/jobs/{job_id:int}/download": "the seeded job has not run: no file yet",
    "GET /api/v1/jobs/{job_id:int}/result": "the seeded job has not run: no result yet",
    "POST /admin/jobs/{job_id:int}/retry": "the seeded job is queued: only ended jobs retry",
    "POST /api/v1/jobs/{job_id:int}/retry": "the seeded job is queued: only ended jobs retry",
    "GET /admin/outbox/{message_id:uuid}": "no mail is in the outbox",
    "GET /register": "self-registration is off by default",
    "POST /register": "self-registration is off by default",
    "GET /setup": "only before the first account exists",
    "POST /setup": "only before the first account exists",
    "GET /reset/{token:str}": "the walk has no mailed reset token",
    "POST /reset/{token:str}": "the walk has no mailed reset token",
    "GET /verify-email/{token:str}": "the walk has no mailed verification token",
    "POST /verify-email/{token:str}": "the walk has no mailed verification token",
    "POST /api/v1/auth/refresh": "the walk sends no refresh token of a sign-in",
    "POST /account/sessions/{short_id:str}/revoke": "the walk knows no session's short id",
    "POST /api/v1/plugins": "the walk's file is an image, not a plugin's zip",
    "POST /admin/plugins/-/upload": "the walk's file is an image, not a plugin's zip",
    **{
        f"{method} {path}": "the walk's PLUGINS_DIR holds no plugin"
        for method, path in (
            ("GET", "/api/v1/plugins/{plugin:str}"),
            ("POST", "/api/v1/plugins/{plugin:str}/install"),
            ("POST", "/api/v1/plugins/{plugin:str}/activate"),
            ("POST", "/api/v1/plugins/{plugin:str}/deactivate"),
            ("POST", "/api/v1/plugins/{plugin:str}/accept"),
            ("POST", "/api/v1/plugins/{plugin:str}/uninstall"),
            ("PUT", "/api/v1/plugins/{plugin:str}/settings"),
            ("GET", "/admin/plugins/-/{plugin:str}/settings"),
            ("POST", "/admin/plugins/-/{plugin:str}/settings"),
            ("GET", "/admin/plugins/-/{plugin:str}/{step:str}"),
            ("POST", "/admin/plugins/-/{plugin:str}/{step:str}"),
            ("GET", "/admin/widgets/{source:str}/{number:int}"),
        )
    },
}
"""Operations whose benign request cannot succeed in the walk, and why (their bad input is
still sent; it meets the refusal in front of the handler's work)."""


@pytest.mark.parametrize("who", ["anonymous", "admin"])
async def test_no_route_answers_hostile_input_with_a_5xx_or_internals(
    hostile_app: Litestar, accounts: dict[str, User], who: str
) -> None:
    ids = await seed(hostile_app, accounts)
    if who == "admin":

        async def renew() -> Caller:
            return await admin(hostile_app, accounts["admin"])

        walk = Walk(hostile_app, accounts, await renew(), renew, ids)
    else:
        walk = Walk(hostile_app, accounts, await anonymous(hostile_app), None, ids)
    await walk.run()
    assert walk.count > 1000
    unreached = [
        f"{label}: the benign request answered {status}"
        for label, status in walk.baselines.items()
        if who == "admin" and status >= 400 and label not in UNREACHED
    ]
    if walk.problems or unreached:
        message = f"{len(walk.problems)} of {walk.count} requests:\n" + "\n".join(walk.problems)
        pytest.fail("\n".join([message, *unreached]), pytrace=False)
