"""`OPTIONS` lists every method of its path, on every route."""

from __future__ import annotations

import re
import uuid

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute

from app.accounts.models import User
from tests.conftest import api_token, signed_in


def _concrete(template: str) -> str:
    path = re.sub(r"\{[^}:]+:uuid\}", str(uuid.uuid4()), template)
    path = re.sub(r"\{[^}:]+:int\}", "1", path)
    return re.sub(r"\{[^}:]+(:\w+)?\}", "made-up", path)


async def test_options_on_a_path_with_three_handlers_allows_all_of_them(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(f"/api/v1/users/{uuid.uuid4()}")
    assert response.status_code == 204
    assert response.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"


async def test_every_route_answers_options_with_every_method_it_takes(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """As an admin (session and bearer token), so that every guard lets OPTIONS through."""
    admin = accounts["admin"]
    token = await api_token(app, admin)
    wrong = []
    async with signed_in(app, admin) as client:
        for route in app.routes:
            if isinstance(route, HTTPRoute) and not route.path.startswith("/static"):
                wrong += await _wrong_allow(client, route, token)
    assert wrong == []


async def _wrong_allow(client: httpx.AsyncClient, route: HTTPRoute, token: str) -> list[str]:
    headers = (
        {"Authorization": f"Bearer {token}"} if route.path.startswith(("/api", "/metrics")) else {}
    )
    response = await client.options(_concrete(route.path), headers=headers)
    expected = ", ".join(sorted(route.methods))
    if response.status_code == 204 and response.headers.get("allow") == expected:
        return []
    return [f"{route.path}: {response.status_code} {response.headers.get('allow')}"]
