"""The input boundary: text the database cannot store is refused where a request comes in.

PostgreSQL refuses the NUL character (U+0000) in text and JSON, and a lone UTF-16
surrogate (U+D800 to U+DFFF) is not text at all; left to the database, either is a 500 in
the middle of a request. They are refused once, for every route, with a 400 (a problem
body on the API, the error page on pages):

- `AsciiRequestTarget` (outside Litestar, which cannot decode it anywhere, not even in
  its error handler): a query string with raw bytes beyond ASCII;
- `InputBoundary` (the first route middleware): a NUL in the path and the query string;
- `BoundaryRequest` (the app's request class), where Litestar reads a body: url-encoded
  fields, multipart field names, values and file names (never a file's content), JSON
  (raw, or as the escapes `\\u0000` and `\\ud800`). JSON that cannot be decoded at all
  (invalid UTF-8, nested deeper than the decoder goes) is a 400 there too; `parse_json`
  reads JSON that comes in a form field by the same rules.

GET requests cost two substring searches (the hot paths: see docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from litestar import Request
from litestar.connection.base import empty_receive, empty_send
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import SerializationException
from litestar.plugins.htmx import HTMXDetails, HTMXRequest
from litestar.serialization import decode_json
from litestar.types import ASGIApp, Receive, Scope, Send
from multipart import MultipartError, MultipartSegment, PushMultipartParser

from app.core.errors import (
    PROBLEM_JSON,
    InvalidField,
    new_error_id,
    plain_error_page,
    problem_body,
)
from app.core.paths import MACHINE

NUL_REFUSED = "A NUL character (U+0000) cannot be stored: remove it and try again."
SURROGATE_REFUSED = (
    "The request holds an unpaired surrogate escape (\\ud800 to \\udfff), which is not "
    "text: send the character itself, or both halves of its pair."
)
NOT_UTF8 = "The request body is not valid UTF-8 text."
NOT_TEXT = (
    "The text holds an unpaired surrogate (U+D800 to U+DFFF), which is what bytes that are "
    "not UTF-8 become: it cannot be stored."
)
TOO_DEEP = "The JSON is nested too deeply."

_JSON_UNSTORABLE = re.compile(
    rb"(?<!\\)(?:\\\\)*"  # escaped backslashes before: the next backslash starts an escape
    rb"(?:\\u0000"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"  # a high half without a low one
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # a low one alone
)


_NUL, _PERCENT = 0, ord("%")


class UnstorableInput(InvalidField):
    """A request carries text the database cannot store."""


class UnreadableJson(InvalidField):
    """JSON text that does not decode (malformed, NaN or Infinity, a number out of range,
    nested too deeply, not UTF-8)."""


def refuse_nul(encoded: bytes) -> None:
    """A query string or url-encoded body: NUL arrives as `%00` (or raw). Bytes are searched
    for a byte (an int) first: `bytes in bytes` costs ten times as much (~400 ns)."""
    if _NUL in encoded or (_PERCENT in encoded and encoded.find(b"%00") != -1):
        raise UnstorableInput(NUL_REFUSED)


def refuse_unstorable_json(body: bytes) -> None:
    """A JSON text: a raw NUL, or the escape of a NUL or of half a surrogate pair."""
    if _NUL in body:
        raise UnstorableInput(NUL_REFUSED)
    if body.find(b"\\u") != -1 and (found := _JSON_UNSTORABLE.search(body)):
        raise UnstorableInput(NUL_REFUSED if found[0].endswith(b"0000") else SURROGATE_REFUSED)


def refuse_unstorable_text(value: str) -> None:
    """Decoded text (a multipart header's parameter, a command-line argument: Python turns
    bytes that are not UTF-8 into lone surrogates there)."""
    if "\x00" in value:
        raise UnstorableInput(NUL_REFUSED)
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise UnstorableInput(NOT_TEXT) from None


class InputBoundary:
    """Refuse a NUL in the path or the query string before any route handler runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            if "\x00" in scope["path"]:
                raise UnstorableInput(NUL_REFUSED)
            refuse_nul(scope["query_string"])
        await self.app(scope, receive, send)


class _MultipartCheck:
    """Follows a multipart body as it streams by: every field's name and file name, and the
    value of each field that is not a file (which must also decode)."""

    def __init__(self, boundary: str) -> None:
        self.parser: PushMultipartParser | None = PushMultipartParser(boundary)
        self.segment: MultipartSegment | None = None
        self.value = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self.parser is None:
            return
        try:
            for event in self.parser.parse(chunk):
                self._take(event)
        except MultipartError:  # Litestar's own parser refuses it with a 400
            self.parser = None

    def _take(self, event: MultipartSegment | bytes | bytearray | None) -> None:
        if isinstance(event, MultipartSegment):
            self.segment, self.value = event, bytearray()
            refuse_unstorable_text(event.name or "")
            refuse_unstorable_text(event.filename or "")
        elif event is None:
            if self.segment is not None and not self.segment.filename:
                _check_field(bytes(self.value), self.segment.charset or "utf-8")
            self.segment = None
        elif self.segment is not None and not self.segment.filename:
            self.value.extend(event)


def _check_field(value: bytes, charset: str) -> None:
    try:
        text = value.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise UnstorableInput(NOT_UTF8) from None
    refuse_unstorable_text(text)


class BoundaryRequest(HTMXRequest):
    """The app's request class: bodies are checked where Litestar reads them.

    `htmx` is made when asked, not held: HTMXRequest keeps an `HTMXDetails` that points
    back at the request, a cycle that kept every request (its scope, its chain of `send`
    wrappers) alive until a garbage collection; a full one, over what had piled up, stalled
    the process for ~100 ms under load. Now a request goes as soon as it is done."""

    def __init__(
        self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send
    ) -> None:
        Request.__init__(self, scope, receive, send)  # not HTMXRequest's: no `htmx` held

    @property
    def htmx(self) -> HTMXDetails:  # type: ignore[override]
        return HTMXDetails(self)

    async def body(self) -> bytes:
        body = await super().body()
        if self.content_type[0] == RequestEncodingType.URL_ENCODED:
            refuse_nul(body)
        return body

    async def stream(self) -> AsyncGenerator[bytes, None]:
        content_type, options = self.content_type
        check = None
        if content_type == RequestEncodingType.MULTI_PART and options.get("boundary"):
            check = _MultipartCheck(options["boundary"])
        async for chunk in super().stream():
            if check is not None:
                check.feed(chunk)
            yield chunk

    async def json(self) -> Any:
        refuse_unstorable_json(await self.body())
        with _decoding_json():
            return await super().json()


def parse_json(text: bytes) -> Any:
    """JSON text that comes in another way than as a body (the admin form's JSON box), read
    exactly as a JSON body is: the same decoder (msgspec, through Litestar), the same
    refusals and messages."""
    refuse_unstorable_json(text)
    with _decoding_json():
        return decode_json(text)


@contextmanager
def _decoding_json() -> Iterator[None]:
    try:
        yield
    except SerializationException as exc:  # malformed, NaN or Infinity, out of range
        raise UnreadableJson(str(exc)) from None
    except UnicodeDecodeError:
        raise UnreadableJson(NOT_UTF8) from None
    except RecursionError:
        raise UnreadableJson(TOO_DEEP) from None


RAW_BYTES_REFUSED = (
    "The address holds bytes that must be percent-encoded (RFC 3986): encode the query "
    "string and send the request again."
)


class AsciiRequestTarget:
    """Refuse a query string with raw bytes beyond ASCII with a 400, before Litestar.

    A request target is ASCII (RFC 3986, 9112); some servers pass other bytes on, and
    Litestar cannot decode them anywhere, not even in its error handler, so the request
    escaped the app as a 500. One `bytes.isascii()` per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("query_string", b"").isascii():
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        error_id = new_error_id()
        scope.setdefault("state", {})["error_id"] = error_id
        if MACHINE.matches(path):
            problem = problem_body(400, RAW_BYTES_REFUSED, path, error_id)
            body, media_type = msgspec.json.encode(problem), PROBLEM_JSON
        else:
            page = plain_error_page(400, RAW_BYTES_REFUSED, error_id)
            body, media_type = page.encode(), "text/html; charset=utf-8"
        headers = [(b"content-type", media_type.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
