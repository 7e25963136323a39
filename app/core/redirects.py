"""Where a page may send the browser next: only to a path on this site.

A `next` value, an `HX-Current-URL` or a `Referer` comes from outside. Whether following it
stays on the site is decided the way a browser reads a URL (WHATWG URL Standard): leading
and trailing C0 controls and spaces are dropped, tab and newline are removed everywhere,
and `\\` is a `/` in http(s) URLs. So `/\\t/evil.example` and `/\\evil.example` are both
`//evil.example`, another host. What remains is percent-encoded, so a Location header
built on it is always printable ASCII.

"This site" is one origin, `site_origin`: the CSRF check (app/core/csrf.py) compares an
unsafe request's Origin or Referer with it, and a page to return to after sign-in
(`page_on_this_site`) must be on it.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from litestar import Request

from app.core.runtime import runtime_of

DEFAULT_PORTS = {"http": 80, "https": 443}
TAB_AND_NEWLINE = str.maketrans("", "", "\t\n\r")
C0_CONTROL_OR_SPACE = "".join(chr(code) for code in range(0x21))
URL_CHARACTERS = "!#$%&'()*+,/:;=?@[]~"
"""Printable ASCII that a URL may carry as it is (letters, digits and `_.-~` always may);
anything else (space, quotes, `<>`, `^`, `{|}`, controls, non-ASCII) is percent-encoded."""


def same_site_path(target: str | None) -> str | None:
    """`target` as a path on this site (`/...`), percent-encoded; None when a browser would
    read it as another host or scheme (`//host`, `/\\host`, `https:...`, `javascript:...`)
    or as no path at all."""
    if not target:
        return None
    cleaned = target.strip(C0_CONTROL_OR_SPACE).translate(TAB_AND_NEWLINE).replace("\\", "/")
    if not cleaned.startswith("/") or cleaned.startswith("//"):
        return None
    try:
        return quote(cleaned, safe=URL_CHARACTERS)
    except UnicodeEncodeError:  # a lone surrogate: no browser sends one, no page has one
        return None


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after sign-in (or any page that takes a `next`): `target` when it is a
    path on this site (see `same_site_path`), else `default`."""
    return same_site_path(target) or default


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL as a browser reads it, lower-cased
    and without its default port; None for anything else (`null`, a path, a malformed
    address, one with a user name, which no browser sends as an Origin or Referer)."""
    try:
        parts = urlsplit(url.strip(C0_CONTROL_OR_SPACE).translate(TAB_AND_NEWLINE))
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


def site_origin(request: Request) -> str | None:
    """This site's origin: PUBLIC_URL's when it is set, else the address the request was
    sent to (its scheme and Host). Only ever compared with: a forged Host header names
    no other site than the one its own request goes to."""
    public_url = runtime_of(request.app.state).settings.app.public_url
    if public_url:
        return origin_of(public_url)
    host = request.headers.get("host")
    return origin_of(f"{request.scope['scheme']}://{host}") if host else None


def page_on_this_site(request: Request, url: str | None) -> str | None:
    """The path (and query) of an absolute `url` on this site's origin, as a browser
    sends it in `HX-Current-URL` or `Referer`; None for another site or anything odd."""
    site = site_origin(request)
    if not url or site is None or origin_of(url) != site:
        return None
    parts = urlsplit(url.strip(C0_CONTROL_OR_SPACE).translate(TAB_AND_NEWLINE))
    return same_site_path((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))


def page_to_return_to(request: Request) -> str | None:
    """The page a person signing in now should come back to: the page asked for when the
    request is one (a GET navigation, plain or boosted by htmx), else the page that sent it
    (a fragment or a form post): htmx's `HX-Current-URL`, else the `Referer`, when on this
    site. None when no such page is known."""
    headers = request.headers
    navigation = (
        "hx-request" not in headers
        or "hx-boosted" in headers
        or "hx-history-restore-request" in headers
    )
    if request.method in ("GET", "HEAD") and navigation:
        query = request.url.query
        return same_site_path(request.url.path + (f"?{query}" if query else ""))
    return page_on_this_site(request, headers.get("hx-current-url")) or page_on_this_site(
        request, headers.get("referer")
    )
