"""The route groups of app/routes.py: what the static files router answers."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    "name",
    ["css/app.css/x", "css/app.css%00", "a%00b", "x" * 5_000, "css/" + "y" * 300 + "/app.css"],
    ids=["below a file", "NUL after a name", "NUL", "5 KB", "a folder name too long"],
)
async def test_a_static_name_no_file_can_have_is_not_found(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/static/{name}")
    assert response.status_code == 404


async def test_a_static_file_is_still_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/css/app.css")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/css; charset=utf-8"
