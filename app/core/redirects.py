"""Where a page may send the browser next: only to a path on this site.

A `next` value, an `HX-Current-URL` or a `Referer` comes from outside. Whether following it
stays on the site is decided the way a browser reads a URL (WHATWG URL Standard): leading
and trailing C0 controls and spaces are dropped, tab and newline are removed everywhere,
and `\\` is a `/` in http(s) URLs. So `/\\t/evil.example` and `/\\evil.example` are both
`//evil.example`, another host. What remains is percent-encoded, so a Location header
built on it is always printable ASCII.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from litestar import Request

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


def page_on_this_site(request: Request, url: str | None) -> str | None:
    """The path (and query) of an absolute `url` that points at this site, as a browser
    sends it in `HX-Current-URL` or `Referer`; None for another site or anything odd.

    This site is the host the request came to or the one of PUBLIC_URL: only the path is
    ever used, so a forged Host header cannot send anyone elsewhere.
    """
    if not url:
        return None
    try:
        parts = urlsplit(url.strip(C0_CONTROL_OR_SPACE).translate(TAB_AND_NEWLINE))
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    hosts = {request.headers.get("host", "").lower()}
    public_url = request.app.state.settings.app.public_url
    if public_url:
        hosts.add(urlsplit(public_url).netloc.lower())
    if parts.netloc.lower() not in hosts:
        return None
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
