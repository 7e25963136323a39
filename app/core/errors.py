"""One exception handler for the whole app.

The API (and other machine paths) answer RFC 9457 problem details; pages answer a friendly
HTML page. Both carry an `error_id` that also lands in the request's log line; the body and
the id are made here only (`problem_body`, `new_error_id`), also for the answers the input
boundary gives before Litestar and for a worker's failed attempts. Stack traces
stay in the log, and only for bugs: an expected dependency outage (503: database or store
not answering, pool busy) is one warning line (`log_failure`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlencode

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from app.core import db as database
from app.core.paths import MACHINE
from app.core.redirects import page_to_return_to
from app.core.runtime import runtime_of
from app.core.store import StoreRefused, StoreUnavailable
from app.core.templating import redirect, render_template

log = logging.getLogger("keel.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(HTTPException):
    """A dependency (database, store) cannot answer right now; the client may retry."""

    status_code = 503

    def __init__(self, detail: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(retry_after)})


T = TypeVar("T")


class DomainError(Exception):
    """A business rule said no. Services raise one of the kinds below (each domain derives
    its errors from them); the API answers it as a problem body with the kind's status,
    pages catch it and show `message` beside `field`."""

    status = 400

    def __init__(
        self, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}


# The kinds of "no", and the one place that gives each its status: a domain error derives
# from exactly one kind and never sets a status of its own (tests/core/test_errors.py).


class InvalidField(DomainError):
    """What the caller sent breaks a rule; `field` names the value when there is one. 400,
    or for a body that parses but does not fit what it asks 422 (413: an upload too big)."""

    status = 400

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        status: Literal[400, 413, 422] = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, field, headers)
        self.status = status
        self.errors: dict[str, str] = {field: message} if field else {}
        """Every named field's message: this one's, and those of the problems found with it
        (`only_if_valid`), so a form shows them all at once and the API lists them all."""

    def found_with(self, others: Sequence[DomainError]) -> None:
        """Carry the messages of the other problems found in the same check."""
        for other in others:
            if isinstance(other, InvalidField):
                for name, message in other.errors.items():
                    self.errors.setdefault(name, message)


class InvalidFields(InvalidField):
    """Several values break their rules at once: `errors` has every field's message (a form
    shows each beside its field; the API lists them all in `errors`)."""

    def __init__(self, errors: Mapping[str, str], *, status: Literal[400, 413, 422] = 422) -> None:
        field, message = next(iter(errors.items()))
        super().__init__(message, field, status=status)
        self.errors = dict(errors)


class NotFound(DomainError):
    """What was asked for does not exist (or the caller may not know that it does): 404."""

    status = 404


class Forbidden(DomainError):
    """The caller is known but may not do this: 403."""

    status = 403


class Conflict(DomainError):
    """The request is valid, but the state of things refuses it (an address taken, the last
    admin, a job already finished): 409."""

    status = 409


class NotSignedIn(DomainError):
    """Credentials that do not prove who the caller is (a spent refresh token): 401."""

    status = 401


class Gone(DomainError):
    """It existed and no longer does (an expired result file): 410."""

    status = 410


class TooManyRequests(DomainError):
    """The caller asked too often; `Retry-After` says when to come back: 429."""

    status = 429

    def __init__(
        self, message: str, retry_after: int, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, None, {**(headers or {}), "Retry-After": str(retry_after)})
        self.retry_after = retry_after


def field_errors(exc: DomainError) -> dict[str, str]:
    """Every message of a refusal by field, as a form shows them beside its fields (`form`
    for one that belongs to no field)."""
    found = {exc.field or "form": exc.message}
    if isinstance(exc, InvalidField):
        found.update(exc.errors)
    return found


KINDS: tuple[type[DomainError], ...] = (
    InvalidField,
    NotFound,
    Forbidden,
    Conflict,
    NotSignedIn,
    Gone,
    TooManyRequests,
)


def only_if_valid(value: T, problems: Sequence[DomainError]) -> T:
    """`value`, or the first of `problems` raised, carrying the others' messages (services
    check every rule at once; a form shows every message, the API lists them all)."""
    if problems:
        first = problems[0]
        if isinstance(first, InvalidField):
            first.found_with(problems[1:])
        raise first
    return value


def _classify(exc: Exception) -> tuple[int, str, dict[str, str], list[dict[str, Any]] | None]:
    """Status, client-safe detail, extra headers and field errors for an exception."""
    errors: list[dict[str, Any]] | None
    if isinstance(exc, ValidationException):
        errors = [
            {"field": item.get("key"), "source": item.get("source"), "message": item.get("message")}
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict)
        ]
        return 400, "The request is not valid: see `errors`.", dict(exc.headers or {}), errors
    if isinstance(exc, InvalidField) and (isinstance(exc, InvalidFields) or len(exc.errors) > 1):
        errors = [{"field": field, "message": message} for field, message in exc.errors.items()]
        return exc.status, "Some values are not valid: see `errors`.", dict(exc.headers), errors
    if isinstance(exc, DomainError):
        errors = [{"field": exc.field, "message": exc.message}] if exc.field else None
        return exc.status, exc.message, dict(exc.headers), errors
    if isinstance(exc, ServiceUnavailable) or (
        isinstance(exc, HTTPException) and exc.status_code < 500
    ):
        detail = exc.detail
        if exc.status_code != 400 and _raised_by_the_framework(exc):
            detail = FRAMEWORK_DETAILS.get(exc.status_code, HTTPStatus(exc.status_code).phrase)
        return exc.status_code, detail, dict(exc.headers or {}), None
    if database.is_busy(exc):
        detail = "The service is busy right now. Please try again shortly."
        return 503, detail, {"Retry-After": str(RETRY_AFTER_SECONDS)}, None
    if database.is_unavailable(exc):
        detail = "The database is not answering right now. Please try again shortly."
        return 503, detail, {"Retry-After": str(RETRY_AFTER_SECONDS)}, None
    if isinstance(exc, StoreUnavailable) and _from_the_store(exc):
        detail = "The session store is not answering right now. Please try again shortly."
        return 503, detail, {"Retry-After": str(RETRY_AFTER_SECONDS)}, None
    if isinstance(exc, StoreRefused):
        detail = "The session store cannot take changes right now. Please try again shortly."
        return 503, detail, {"Retry-After": str(RETRY_AFTER_SECONDS)}, None
    return (
        500,
        "Something went wrong on our side. The error id identifies it in our logs.",
        {},
        None,
    )


FRAMEWORK_DETAILS = {
    404: "There is nothing at this address.",
    405: "This address does not take this method (see Allow).",
    413: "The request is too large.",
}
"""What an error Litestar raised says, instead of its own text (its static files named the
directory on disk); other statuses say their reason phrase. A 400 keeps its text: it says
what is wrong with the request (a malformed body, a multipart part)."""


def _raised_by_the_framework(exc: Exception) -> bool:
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and trace.tb_frame.f_globals.get("__name__", "").startswith("litestar")


_STORE_CODE = ("valkey", "app.core.store")


def _from_the_store(exc: Exception) -> bool:
    """StoreUnavailable also names the builtin OSError family, right for `except` around a
    store call; here a full disk would pass for Valkey being away, so those count only
    when the store's code raised them."""
    return not isinstance(exc, OSError) or database.raised_in(exc, _STORE_CODE)


def new_error_id() -> str:
    """The id of one error: in its answer, its request's log line and any logged traceback
    (a worker's failed attempt too)."""
    return os.urandom(8).hex()


def status_title(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


def problem_body(
    status: int,
    detail: str,
    instance: str,
    error_id: str,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem-details body, as every error answer on the API has it."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": status_title(status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "error_id": error_id,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def plain_error_page(status: int, detail: str, error_id: str) -> str:
    """The error page without templates: when rendering it failed, or before a request
    reaches Litestar (app/core/boundary.py)."""
    title = status_title(status)
    return (
        f'<!doctype html><meta charset="utf-8"><title>{status} {title}</title>'
        f"<h1>{title}</h1><p>{escape(detail)}</p><p>Error id: {error_id}</p>"
    )


def handle_exception(request: Request, exc: Exception) -> Response[Any]:
    """Turn any exception into a problem body (API) or an error page (pages)."""
    status, detail, headers, errors = _classify(exc)
    error_id = new_error_id()
    request.scope.setdefault("state", {})["error_id"] = error_id
    if status >= 500:
        log_failure(
            log,
            "dependency unavailable" if status == 503 else "unhandled error",
            exc,
            error_id=error_id,
            status=status,
            path=request.url.path,
        )
    headers.pop("Content-Type", None)
    headers.pop("content-type", None)

    if status == 401 and not (MACHINE.matches(request.url.path) or _prefers_json(request)):
        return _sign_in_redirect(request)
    if MACHINE.matches(request.url.path) or _prefers_json(request):
        body = problem_body(status, detail, request.url.path, error_id, errors)
        return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
    return _error_page(request, status, detail, error_id, headers)


def is_outage(exc: BaseException) -> bool:
    """A dependency could not serve (database or store not answering, pool busy): expected
    in an outage, answered 503, not a bug."""
    return isinstance(exc, Exception) and _classify(exc)[0] == 503


def log_failure(
    logger: logging.Logger,
    message: str,
    exc: BaseException,
    level: int = logging.ERROR,
    **fields: object,
) -> None:
    """Log a failure: an outage as one warning line with the exception's type and the first
    line of its message (an outage repeats on every request; its traceback says nothing
    new), anything else at `level` with its traceback."""
    if not is_outage(exc):
        logger.log(level, message, exc_info=exc, extra=fields)
        return
    lines = str(exc).strip().splitlines() or [""]
    error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
    logger.warning(message, extra={**fields, "error_type": error_type, "error": lines[0][:200]})


def _sign_in_redirect(request: Request) -> Response[Any]:
    """Pages answer "who are you?" with the sign-in page, coming back afterwards to the page
    the person was on (never to a fragment or a form's address)."""
    target = page_to_return_to(request)
    location = f"/login?{urlencode({'next': target})}" if target else "/login"
    if request.headers.get("hx-request"):
        return Response(b"", status_code=200, headers={"HX-Redirect": location})
    return redirect(location)


def _prefers_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return ("application/json" in accept or PROBLEM_JSON in accept) and "text/html" not in accept


LayoutPart = Callable[[Request], Awaitable[Mapping[str, Any]]]
"""One part of what a page's layout shows around its content, for the error page: the
context it adds (the site's title and menu), or a change to the request (who is signed in,
for a path no route matches, where no middleware ran)."""

LAYOUT_SECONDS = 1.0
"""How long the error page waits for each part of its layout before leaving it out."""


class ErrorPageLayout:
    """What error pages show around the error, as the other public pages do: the parts
    the composition root gives (app/asgi.py). A part that fails or takes longer than
    LAYOUT_SECONDS (the database or the store down) is left out: the bare menu. Errors
    of 500 and up skip them all: something is down, and the answer should not wait."""

    def __init__(self, *parts: LayoutPart) -> None:
        self.parts = parts

    async def context(self, request: Request) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for part in self.parts:
            try:
                async with asyncio.timeout(LAYOUT_SECONDS):
                    found.update(await part(request))
            except Exception as exc:  # the error page itself must never fail
                log_failure(log, "error page layout left out", exc, level=logging.WARNING)
        return found


@dataclass(frozen=True)
class _ErrorPage:
    status: int
    detail: str
    error_id: str
    headers: dict[str, str]

    def response(self, request: Request, layout: Mapping[str, Any]) -> Response[Any]:
        context = {
            **layout,
            "request": request,
            "status": self.status,
            "title": status_title(self.status),
            "detail": self.detail,
            "error_id": self.error_id,
        }
        try:
            html = render_template(request, "errors/error.html", context)
        except Exception:  # the error page itself must never fail
            log.exception("error page failed to render", extra={"error_id": self.error_id})
            html = plain_error_page(self.status, self.detail, self.error_id)
        return Response(
            html, status_code=self.status, media_type=MediaType.HTML, headers=self.headers
        )


class _LaidOutErrorPage(Response[Any]):
    """The error page, laid out when it is sent: Litestar's exception handlers are
    synchronous, the parts of the layout are not."""

    def __init__(self, page: _ErrorPage, layout: ErrorPageLayout) -> None:
        super().__init__(b"", status_code=page.status)
        self.page, self.layout = page, layout

    def to_asgi_response(self, app: Any, request: Request, **_: Any) -> ASGIResponse:
        async def send_page(scope: Scope, receive: Receive, send: Send) -> None:
            response = self.page.response(request, await self.layout.context(request))
            await response.to_asgi_response(None, request)(scope, receive, send)

        return cast("ASGIResponse", send_page)


def _error_page(
    request: Request, status: int, detail: str, error_id: str, headers: dict[str, str]
) -> Response[Any]:
    page = _ErrorPage(status, detail, error_id, headers)
    layout = _layout_of(request) if status < 500 else None
    return page.response(request, {}) if layout is None else _LaidOutErrorPage(page, layout)


def _layout_of(request: Request) -> ErrorPageLayout | None:
    try:
        return runtime_of(request.app.state).service(ErrorPageLayout)
    except LookupError:  # an app without Keel's runtime (a bare test app)
        return None
