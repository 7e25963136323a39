"""The machine-readable faces of the public site: Atom feed, sitemap and robots.txt.

Documents are built with ElementTree, so titles and bodies are escaped by construction and
the output is always well-formed XML. Elements are unprefixed, with the namespace declared
once on the root (`xmlns=...`), as feed readers expect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from uuid import UUID
from xml.etree import ElementTree

from app.content.models import Entry

ATOM_NS = "http://www.w3.org/2005/Atom"
SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _updated(entry: Entry) -> datetime:
    """The later of the publish time and the last edit: what a reader would call "updated"."""
    published = entry.published_at or entry.updated_at
    return max(published, entry.updated_at) if entry.updated_at else published


def _document(root: ElementTree.Element) -> bytes:
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def atom_feed(
    *,
    title: str,
    subtitle: str,
    home_url: str,
    feed_url: str,
    posts: Sequence[Entry],
    post_url: Callable[[Entry], str],
    authors: Mapping[UUID | None, str],
) -> bytes:
    """An Atom 1.0 document of `posts` (newest first); bodies go in as escaped HTML."""

    def sub(
        parent: ElementTree.Element, tag: str, text: str | None = None, **attrs: str
    ) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, tag, attrs)
        if text is not None:
            element.text = text
        return element

    feed = ElementTree.Element("feed", xmlns=ATOM_NS)
    sub(feed, "id", feed_url)
    sub(feed, "title", title)
    if subtitle:
        sub(feed, "subtitle", subtitle)
    newest = max((_updated(p) for p in posts), default=None)
    sub(feed, "updated", _iso(newest) if newest else "1970-01-01T00:00:00+00:00")
    sub(feed, "link", href=feed_url, rel="self", type="application/atom+xml")
    sub(feed, "link", href=home_url, rel="alternate", type="text/html")
    sub(sub(feed, "author"), "name", title)
    sub(feed, "generator", "Keel")
    for post in posts:
        url = post_url(post)
        item = sub(feed, "entry")
        sub(item, "id", url)
        sub(item, "title", post.title)
        sub(item, "updated", _iso(_updated(post)))
        if post.published_at:
            sub(item, "published", _iso(post.published_at))
        sub(item, "link", href=url, rel="alternate", type="text/html")
        sub(sub(item, "author"), "name", authors.get(post.author_id) or title)
        for tag in post.tags:
            sub(item, "category", term=tag.slug, label=tag.name)
        sub(item, "summary", post.excerpt)
        sub(item, "content", post.body_html, type="html")
    return _document(feed)


def sitemap(urls: Sequence[tuple[str, datetime | None]]) -> bytes:
    """A sitemap of absolute `urls`, each with the time it last changed (when known)."""
    root = ElementTree.Element("urlset", xmlns=SITEMAP_NS)
    for loc, lastmod in urls:
        url = ElementTree.SubElement(root, "url")
        ElementTree.SubElement(url, "loc").text = loc
        if lastmod is not None:
            ElementTree.SubElement(url, "lastmod").text = _iso(lastmod)
    return _document(root)


def robots_txt(sitemap_url: str) -> str:
    """Crawlers may read everything public; the admin and the API are not for them."""
    return "\n".join(
        [
            "User-agent: *",
            "Allow: /",
            "Disallow: /admin",
            "Disallow: /api",
            "",
            f"Sitemap: {sitemap_url}",
            "",
        ]
    )
