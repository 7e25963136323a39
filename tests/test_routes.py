"""The route groups of app/routes.py: what the static files router answers."""

from __future__ import annotations

import httpx
import pytest

from app.core.templating import STATIC_DIR
from app.routes import StaticFiles


@pytest.mark.parametrize(
    "name",
    ["css/app.css/x", "x" * 5_000, "css/" + "y" * 300 + "/app.css"],
    ids=["below a file", "5 KB", "a folder name too long"],
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


@pytest.mark.parametrize("name", ["app.css\x00", "css/app.css/x", "x" * 5_000])
async def test_the_static_file_system_finds_no_file_under_an_impossible_name(name: str) -> None:
    """A NUL never gets this far (the input boundary refuses it with a 400), but the static
    folder answers "not found" for it too, whoever calls it."""
    with pytest.raises(FileNotFoundError):
        await StaticFiles().info(STATIC_DIR / name)
