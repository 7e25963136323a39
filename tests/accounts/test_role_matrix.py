"""Every registered route, called by every role, answers as its guard says.

Anonymous callers get 401 on the API and other machine paths (`/metrics`) and a sign-in
redirect on pages; too low a role gets 403; a sufficient role gets past the guard
(whatever the handler then says about the made-up ids and empty bodies used here).
"""

from __future__ import annotations

import re
import uuid

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.accounts.guards.roles import required_role
from app.accounts.models import Role
from app.core.paths import MACHINE
from tests.conftest import api_token, client_for, fresh, signed_in, with_csrf

UNGUARDED_BY_DESIGN = ("/schema",)
"""The OpenAPI document is public documentation of the API itself."""
ROLES = (None, "viewer", "editor", "admin")


def _routes(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    found = []
    for route in app.routes:
        if route.path.startswith(UNGUARDED_BY_DESIGN) or route.path.startswith("/static"):
            continue
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            for method in sorted(handler.http_methods - {"HEAD", "OPTIONS"}):
                path = re.sub(r"\{[^}:]+:uuid\}", str(uuid.uuid4()), route.path)
                path = re.sub(r"\{[^}:]+:int\}", "1", path)
                path = re.sub(r"\{[^}:]+(:str)?\}", "made-up", path)
                found.append((method, path, handler))
    return found


async def test_every_route_declares_the_role_it_needs(app: Litestar) -> None:
    undeclared = [
        f"{method} {path}"
        for method, path, handler in _routes(app)
        if required_role(handler) is None
    ]
    assert undeclared == []


async def test_every_route_answers_every_role_as_its_guard_says(
    app: Litestar, accounts: dict
) -> None:
    problems = []
    for method, path, handler in _routes(app):
        needed = required_role(handler)
        for role in ROLES:
            caller = Role[role] if role else Role.guest
            if role is None:
                async with client_for(app) as client:
                    await with_csrf(client)
                    response = await client.request(method, path)
            elif path.startswith("/api/"):  # the API takes tokens, never cookies
                user = await fresh(app, accounts[role])
                token = await api_token(app, user)
                async with client_for(app) as client:
                    headers = {"Authorization": f"Bearer {token}"}
                    response = await client.request(method, path, headers=headers)
            else:
                async with signed_in(app, accounts[role]) as client:
                    response = await client.request(method, path)
            status = response.status_code
            to_login = status in (302, 303) and response.headers.get("location", "").startswith(
                "/login"
            )
            if needed is None or needed == Role.guest:
                ok = status not in (401, 403) and not to_login
            elif caller < needed and role is None:  # machine paths answer 401, pages redirect
                ok = status == 401 if MACHINE.matches(path) else to_login
            elif caller < needed:
                ok = status == 403
            else:  # past the guard; a POST may sign the caller out (sign out everywhere)
                ok = (
                    status not in (401, 403) and status < 500 and not (to_login and method == "GET")
                )
            if not ok:
                problems.append(
                    f"{method} {path} as {role or 'anonymous'} (needs {needed.name}): {status}"
                )
    assert problems == [], "\n".join(problems)
