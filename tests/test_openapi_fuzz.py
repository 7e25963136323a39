"""schemathesis over the whole OpenAPI document, anonymously and as an admin, on both legs.

The app runs in-process (schemathesis' ASGI transport); every operation gets the document's
examples, schemathesis' coverage cases and a bounded number of generated ones, valid and
invalid, and every answer must pass the checks in CHECKS: no 5xx, a documented status and
content type, a body that matches its declared schema. Generation is derandomized (Hypothesis
seeds each operation's cases from the test itself, and keeps no example database), so every
run, in CI or here, sends the same requests: a failure is reproduced by running it again.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from app.accounts.models import User
from app.asgi import create_app
from app.core.db import create_engine, create_sessionmaker
from app.settings import Settings
from app.site_settings.services import write_setting
from tests.conftest import LEGS, create_accounts, empty_storage, require_services

EXAMPLES = 12
"""Generated cases per operation and caller (besides the examples and coverage cases)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]
"""Every check schemathesis has for single requests but `positive_data_acceptance`: the
document gives each request's shape, not every rule behind it (a NUL refused in any text,
an e-mail address that must look like one, a title that is not blank), so a request that
fits the schema may well be refused with a 400."""


def _run(coroutine: Any) -> Any:
    """Run a coroutine to the end on a loop of its own (fixtures here are synchronous, and the
    app's own loop is schemathesis' ASGI thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class CurrentApp:
    """What schemathesis calls: the app of the current leg and caller (set by `target`),
    as the other tests use it (no lifespan: no worker, no background tasks). It runs on
    schemathesis' ASGI loop, so its connections are closed there, at lifespan shutdown."""

    def __init__(self) -> None:
        self.app: Litestar | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            assert self.app is not None
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.app is not None:
                    await self.app.state.reads.close()
                    await self.app.state.engine.dispose()
                    await self.app.state.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


CURRENT = CurrentApp()


async def _sign_in(app: Litestar, user: User) -> uuid.UUID:
    """A new sign-in (token family) of `user`, on a connection of this loop's own."""
    engine = create_engine(app.state.settings.db)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            family, _ = await app.state.refresh_tokens.start(session, user.id, user.auth_version)
    finally:
        await engine.dispose()
    return family


SIGN_OUT = "/api/v1/auth/logout"


@dataclass
class Target:
    app: Litestar
    caller: str
    admin: User
    family: uuid.UUID | None = None
    """The admin's sign-in whose access tokens the cases send."""

    def headers(self, case: schemathesis.Case) -> dict[str, str]:
        """A new access token for each case. A case that signs out ends every token of the
        sign-in it was sent with, so it gets a sign-in of its own."""
        if self.caller == "anonymous":
            return {}
        if self.family is None:
            self.family = _run(_sign_in(self.app, self.admin))
        family = _run(_sign_in(self.app, self.admin)) if case.path == SIGN_OUT else self.family
        admin = self.admin
        token = self.app.state.access_tokens.issue(admin.id, admin.role, admin.auth_version, family)
        return {"Authorization": f"Bearer {token}"}


async def _prepare(settings: Settings, password_hash: str) -> User:
    """The accounts, and no API rate limit to run into; the admin's account."""
    users = await create_accounts(settings, password_hash)
    engine = create_engine(settings.db)
    async with create_sessionmaker(engine)() as session, session.begin():
        await write_setting(session, "api_rate_limit_per_minute", 1_000_000)
    await engine.dispose()
    return users["admin"]


@pytest.fixture(
    scope="module",
    params=[(leg, caller) for leg in LEGS for caller in ("anonymous", "admin")],
    ids=lambda param: "-".join(param),
)
def target(
    request: pytest.FixtureRequest, leg_base: dict[str, Settings], password_hash: str
) -> Iterator[Target]:
    leg, caller = request.param
    if leg == "services":
        require_services()
    settings = leg_base[leg]
    admin = _run(_prepare(settings, password_hash))
    CURRENT.app = create_app(settings)
    yield Target(CURRENT.app, caller, admin)
    asgi.shutdown_lifespans()
    CURRENT.app = None
    _run(empty_storage(settings))


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, as `/schema/openapi.json` serves it (the same on both legs;
    built at collection, so that every operation is a test of its own)."""
    with tempfile.TemporaryDirectory() as var:
        environment = {"VAR_DIR": var, "DATABASE_URL": f"sqlite+aiosqlite:///{var}/keel.db"}
        app = create_app(Settings.from_env(environment, env_file=Path("/nonexistent")))
        return app.openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(_document())
schema.app = CURRENT  # every call, and every check's own (ignored_auth resends without credentials)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_openapi_document_says(case: schemathesis.Case, target: Target):
    case.call_and_validate(headers=target.headers(case), checks=CHECKS)
