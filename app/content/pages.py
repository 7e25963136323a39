"""Public pages, rendered on the server."""

from __future__ import annotations

from litestar import Controller, Request, Response, get
from litestar.response import Redirect

from app.accounts import guards
from app.core.db import DbSession
from app.core.templating import render, static_url
from app.system.settings import read_settings


class PublicPagesController(Controller):
    path = "/"
    include_in_schema = False
    guards = [guards.public]

    @get("/", name="public:home")
    async def home(self, request: Request, db_session: DbSession) -> Response[str]:
        """The home page: the site's title and introduction from the runtime settings."""
        values = await read_settings(db_session)
        return render(request, "content/home.html", {"site": values})

    @get("/favicon.ico", name="public:favicon")
    async def favicon(self) -> Redirect:
        """Browsers and feed readers ask for /favicon.ico whatever the page says."""
        return Redirect(static_url("img/favicon.svg"), status_code=301)
