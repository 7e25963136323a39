"""What the OpenAPI document says about errors and credentials, for every operation at once.

Every answer that is not a success is a problem-details body (RFC 9457,
`application/problem+json`, written by the one handler in `app/core/errors.py`). Instead of
each handler listing them, `document_errors` gives every operation of the document, in
one place, the error statuses it can answer from what the route shows: its guard (401 and
403 when it needs a signed-in caller), its path parameters (404), its method (409 for
writes), its body (413, 422), the API prefix (401 for a bad token, 429 for the rate
limit), and 400, 500 and 503 everywhere. A handler adds what only it can answer (a result
file that expired: 410) with `responses=problem_responses(410)`. Operations that need a
caller also name the credentials they take (a bearer token or an API key), and a body
the handler can do without is not required, and one that takes `fields` documents the
cut-down answer beside the default one (`Selectable`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Operation,
    Reference,
    RequestBody,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from app.core.errors import PROBLEM_JSON
from app.core.fields import FIELDS, Selectable
from app.core.paths import API

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FieldProblem(msgspec.Struct, omit_defaults=True):
    """One field the request got wrong (`source`: where the framework found it)."""

    field: str | None
    message: str | None
    source: str | msgspec.UnsetType | None = msgspec.UNSET


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details; `error_id` names the answer in the server's log."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    error_id: str
    errors: list[FieldProblem] | msgspec.UnsetType = msgspec.UNSET


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem-details answers for `statuses`, as a route handler's `responses`."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
        )
        for status in statuses
    }


SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "bearer": SecurityScheme(
        type="http",
        scheme="bearer",
        description="An access token from `POST /api/v1/auth/login`, or an API key.",
    ),
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
}
CREDENTIALS: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]


@dataclass
class OptionalBodyOperation(Operation):
    """An operation that also takes no body at all (its handler's `data` has a default);
    Litestar marks every request body required."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


def security_components() -> Components:
    """The credential schemes that `document_errors` refers to, for the OpenAPI config."""
    return Components(security_schemes=SECURITY_SCHEMES)


def error_statuses(path: str, handler: HTTPRouteHandler, needs_caller: bool) -> list[int]:
    """Every error status `handler` (served at `path`) can answer."""
    statuses = {400, 500, 503}
    if API.matches(path):
        statuses |= {401, 429}
    if needs_caller:
        statuses |= {401, 403}
    if "{" in path:
        statuses.add(404)
    if handler.http_methods & WRITES:
        statuses.add(409)
    if "data" in handler.parsed_fn_signature.parameters:
        statuses |= {413, 422}
    return sorted(statuses)


def document_errors(app: Litestar, needs_caller: Callable[[HTTPRouteHandler], bool]) -> None:
    """Give every documented operation its problem answers (and, when it needs a caller,
    its credentials). Runs before the document is first built (Litestar builds it lazily)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            guarded = needs_caller(handler)
            own = dict(handler.responses or {})
            handler.responses = {
                **problem_responses(*error_statuses(route.path, handler, guarded)),
                **own,
            }
            if guarded and not handler.security:
                handler.security = CREDENTIALS
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and data.has_default:
                handler.operation_class = OptionalBodyOperation
            if FIELDS in handler.parsed_fn_signature.parameters:
                handler.operation_class = Selectable
