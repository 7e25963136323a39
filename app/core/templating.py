"""Jinja2 set-up, content-hashed static URLs, and HX-Request aware rendering.

Templates are looked up in the folders of `TEMPLATE_FOLDERS` (an `app.core.registry.Registry`),
in the order they were added: Keel's `templates/` first, so a plugin's folder (holding
`<plugin>/...` names) adds templates and never replaces Keel's. Compiled templates are kept
until the folders change; the `url_for` memo until the app's routes do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import BaseLoader, Environment, FileSystemLoader, pass_context
from litestar import MediaType, Request
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.plugins.htmx import HTMXDetails
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Response
from litestar.template import TemplateConfig

from app import __version__
from app.core.csrf import token_of
from app.core.pagination import filters_set, query_string
from app.core.registry import KEEL, Registry
from app.core.runtime import runtime_of
from app.core.zones import DATE_AND_TIME, local_input, local_time, zone_of
from app.settings import ROOT, AppSettings, Settings

TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
STATIC_PREFIX = "/static"


@dataclass(frozen=True)
class TemplateFolder:
    name: str
    path: Path


TEMPLATE_FOLDERS: Registry[str, TemplateFolder] = Registry("template folder", key=lambda f: f.name)
TEMPLATE_FOLDERS.add(KEEL, TemplateFolder("keel", TEMPLATES_DIR))


class FolderLoader(BaseLoader):
    """Templates from the registered folders, the first that has the name. A compiled
    template is out of date once the folders change (and, with `watch_files`, when its
    file does, as in development)."""

    def __init__(self, folders: Registry[str, TemplateFolder], *, watch_files: bool) -> None:
        self.folders = folders
        self.watch_files = watch_files
        self._generation = -1
        self._loader = FileSystemLoader([])

    def _current(self) -> FileSystemLoader:
        if self._generation != self.folders.generation:
            self._loader = FileSystemLoader([folder.path for folder in self.folders])
            self._generation = self.folders.generation
        return self._loader

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        generation = self.folders.generation
        source, filename, file_unchanged = self._current().get_source(environment, template)

        def uptodate() -> bool:
            if self.folders.generation != generation:
                return False
            return not self.watch_files or file_unchanged is None or file_unchanged()

        return source, filename, uptodate

    def list_templates(self) -> list[str]:
        return self._current().list_templates()


_rendering: ContextVar[Request | None] = ContextVar("rendering_request", default=None)


def csrf_token() -> str:
    """The CSRF token of the request being rendered; works inside imported macros too."""
    request = _rendering.get()
    if request is None:
        return ""
    return token_of(request.scope)


def rendering_zone() -> ZoneInfo:
    """The site's time zone for the page being rendered (UTC outside a page request)."""
    request = _rendering.get()
    return zone_of(request.state if request is not None else None)


def shown_time(moment: datetime | None, form: str = DATE_AND_TIME) -> str:
    """The `local_time` filter: `{{ job.created_at | local_time }}` is `2027-03-01 09:00
    CET` in the site's time zone; a date form (`"%Y-%m-%d"`) gives the local date alone."""
    return "" if moment is None else local_time(moment, rendering_zone(), form)


def iso_moment(value: object) -> datetime | None:
    """The `iso_moment` filter: a time written as ISO 8601 text with its offset (as job
    results and audit details keep them), or None for any other value."""
    if not isinstance(value, str) or len(value) < 16 or value[10:11] != "T":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def zone_name() -> str:
    """The site's time zone by name (Europe/Berlin), for a form's label."""
    return rendering_zone().key


def input_time(moment: datetime | None) -> str:
    """A `datetime-local` input's value for `moment`, in the site's time zone."""
    return local_input(moment, rendering_zone())


@cache
def _versioned(asset: str) -> str:
    path = (STATIC_DIR / asset).resolve()
    if not path.is_file() or STATIC_DIR.resolve() not in path.parents:
        raise FileNotFoundError(f"no static asset {asset!r}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{STATIC_PREFIX}/{asset}?v={digest}"


def static_url(asset: str) -> str:
    """`/static/<asset>?v=<content hash>`: safe to cache for a year, changes when the file does.

    Hashed once per process (static files ship with a release); a restart picks up edits.
    """
    return _versioned(asset)


URLS_KEPT = 4096


@dataclass
class UrlMemo:
    """The addresses templates asked for, valid for one routing generation (one per
    runtime: `Runtime.service(UrlMemo)`)."""

    generation: int = 0
    urls: dict[tuple[Any, ...], str] = field(default_factory=dict)


@pass_context
def url_for(context: Mapping[str, Any], route_name: str, /, **path_parameters: Any) -> str:
    """Litestar's template `url_for`, remembered per app until its routes change (a
    plugin's route group added or removed): a page asks for the same few addresses on
    every render."""
    app = context["request"].app
    runtime = runtime_of(app.state)
    routing = runtime.routing
    generation = routing.generation if routing is not None else 0
    memo = runtime.service(UrlMemo)
    if memo.generation != generation:
        memo.generation, memo.urls = generation, {}
    known = memo.urls
    key = (route_name, *path_parameters.items())
    url = known.get(key)
    if url is None:
        if len(known) >= URLS_KEPT:
            known.clear()
        url = known[key] = app.route_reverse(route_name, **path_parameters)
    return url


def create_template_config(
    settings: Settings, extra_globals: Mapping[str, Any] | None = None
) -> TemplateConfig[JinjaTemplateEngine]:
    """The Jinja environment over `TEMPLATE_FOLDERS`, with Keel's template globals (and
    `extra_globals`, which domains provide: the admin menu)."""
    # Templates ship with a release: production never stats them again per render;
    # development picks up an edited template on the next request. Either way a template
    # is compiled again once the folders change (`FolderLoader`'s up-to-date check).
    loader = FolderLoader(TEMPLATE_FOLDERS, watch_files=not settings.app.is_production)
    engine = JinjaTemplateEngine.from_environment(
        Environment(loader=loader, autoescape=True, auto_reload=True)
    )
    share_keel_templating(engine, production=settings.app.is_production)
    engine.engine.globals.update(url_for=url_for, **(extra_globals or {}))
    return TemplateConfig(instance=engine)


def share_keel_templating(engine: JinjaTemplateEngine, *, production: bool) -> None:
    """The globals and filters Keel's layouts and macros use, for Keel's engine and each
    plugin's alike (a plugin page extends Keel's layouts): one list, so neither misses
    one. Each engine adds its own `url_for`."""
    engine.engine.globals.update(
        static_url=static_url,
        keel_version=__version__,
        production=production,
        query_string=query_string,
        filters_set=filters_set,
        csrf_token=csrf_token,
        zone_name=zone_name,
        input_time=input_time,
        page_address=page_address,
    )
    engine.engine.filters["local_time"] = shown_time
    engine.engine.filters["iso_moment"] = iso_moment


Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
"""A handler's `data` annotation for an HTML form post."""
MultipartForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)]
"""A handler's `data` annotation for an HTML form post with files (values or UploadFile)."""


def redirect(location: str, cookie: Cookie | None = None) -> Response[bytes]:
    """303 See Other: after a form POST, the browser loads `location` with a GET."""
    response: Response[bytes] = Response(b"", status_code=303, headers={"Location": location})
    if cookie is not None:
        response.set_cookie(cookie)
    return response


@cache
def listening_address(host: str, port: int) -> str:
    """`http://<host>:<port>`: where `keel serve` listens (HOST, PORT). A wildcard bind
    address (`0.0.0.0`, `::`) means this machine; an IPv6 address is bracketed."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def site_base(request: Request) -> str:
    """The site's address for links that leave a page: PUBLIC_URL, or (in development,
    where it may be unset) the address Keel listens on. Never the request's Host header,
    which anyone can forge into an e-mail, a feed or a cached page."""
    return site_address(runtime_of(request.app.state).settings.app)


def site_address(app: AppSettings) -> str:
    """PUBLIC_URL, or the address Keel listens on (`site_base`, outside a request)."""
    return app.public_url or listening_address(app.host, app.port)


def absolute_url(request: Request, route_name: str, **path_params: Any) -> str:
    """A named route's absolute address (in an e-mail, a feed, a canonical tag, or handed
    to an API client), on `site_base`."""
    return site_base(request) + request.app.route_reverse(route_name, **path_params)


ADDRESS_PARAMETERS = ("q", "page")
"""The query parameters that make a public page another page (search words, a list's
page); anything else (tracking tags, cache busters) is left out of its canonical address."""


def page_address(request: Request) -> str:
    """The canonical absolute address of the page being rendered, on `site_base`."""
    kept = {
        key: value
        for key, value in request.query_params.items()
        if key in ADDRESS_PARAMETERS and value not in ("", "1" if key == "page" else "")
    }
    return site_base(request) + request.url.path + (("?" + urlencode(kept)) if kept else "")


def wants_fragment(request: Request) -> bool:
    """An htmx request that swaps part of a page (not a boosted full-page navigation)."""
    htmx: HTMXDetails | None = getattr(request, "htmx", None)
    if not htmx:  # not an HTMXRequest, or no HX-Request header
        return False
    return not htmx.boosted and not htmx.history_restore_request


def _jinja(request: Request) -> JinjaTemplateEngine:
    """The app's template engine: Jinja (`create_template_config`)."""
    engine = request.app.template_engine
    assert isinstance(engine, JinjaTemplateEngine)
    return engine


def render_template(request: Request, template_name: str, context: dict[str, Any]) -> str:
    """A whole template as a string, with the request's CSRF token available to macros."""
    engine = _jinja(request)
    token = _rendering.set(request)
    try:
        return engine.engine.get_template(template_name).render({"request": request, **context})
    finally:
        _rendering.reset(token)


def render(
    request: Request,
    template_name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = "content",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    """Render the full page, or only `block` when htmx asks for a fragment.

    Pages rendered here always send `Vary: HX-Request`, so caches keep both forms apart.
    A block rendered alone does not see the template's top-level imports: import macros
    inside the block.
    """
    engine = _jinja(request)
    template = engine.engine.get_template(template_name)
    values = {"request": request, **(context or {})}
    token = _rendering.set(request)
    try:
        if block and wants_fragment(request) and block in template.blocks:
            body = "".join(template.blocks[block](template.new_context(values)))
        else:
            body = template.render(values)
    finally:
        _rendering.reset(token)
    return Response(
        body,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers={"Vary": "HX-Request", **(headers or {})},
    )


def render_list(
    request: Request,
    template_name: str,
    context: dict[str, Any],
    *,
    params: dict[str, Any],
    page: int | None,
    invalid: bool = False,
) -> Response[str]:
    """A filterable list page: its `results` block answers htmx, and the address bar shows
    only the filters actually set (htmx would push the form's empty fields too)."""
    shown = {**params, "page": page if page and page > 1 else None}
    push = {"HX-Push-Url": request.url.path + query_string(shown).rstrip("?")}
    return render(
        request,
        template_name,
        context,
        block="results",
        status_code=400 if invalid else 200,
        headers=push if wants_fragment(request) else None,
    )
