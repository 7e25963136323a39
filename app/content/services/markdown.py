"""Markdown to safe HTML, once, when an entry is saved.

markdown-it renders CommonMark (raw HTML in the source is escaped, not passed through),
then nh3 keeps only an allow-list of tags, attributes and URL schemes. Whatever an author
types, the stored HTML cannot run script in a visitor's browser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import unescape
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

ImageSizes = Mapping[str, tuple[int, int]]
"""Width and height in pixels by image address (`/media/<stored name>`)."""


def _image(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image with its width and height when Keel knows them (the browser keeps its room
    before it loads, so the text does not jump), lazily loaded after the first one (which
    is likely on screen, and the page's largest paint)."""
    token = tokens[idx]
    size = env["image_sizes"].get(token.attrGet("src"))
    if size is not None:
        token.attrSet("width", str(size[0]))
        token.attrSet("height", str(size[1]))
    if env["images"]:
        token.attrSet("loading", "lazy")
    env["images"] += 1
    return renderer.image(list(tokens), idx, options, env)


_renderer = MarkdownIt(
    "commonmark", {"html": False, "linkify": False, "typographer": False}
).enable(["table", "strikethrough"])
_renderer.add_render_rule("image", _image)

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "code",
    "em",
    "strong",
    "del",
    "s",
    "a",
    "img",
    "ul",
    "ol",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height", "loading"},
    "th": {"align"},
    "td": {"align"},
    "ol": {"start"},
    "code": {"class"},
}
URL_SCHEMES = {"http", "https", "mailto"}
_CELL_ALIGN = re.compile(r'<(th|td) style="text-align:(left|center|right)">')
"""A table column's alignment as markdown-it writes it: a style attribute, which the CSP
and the sanitizer refuse; kept as the `align` attribute (raw HTML in the source is escaped,
so only the renderer writes such a tag)."""


def sanitize_html(html: str) -> str:
    """Keep only allowed tags, attributes and URL schemes; links get rel=noopener."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render_markdown(source: str, image_sizes: ImageSizes | None = None) -> str:
    """Safe HTML of `source`; images found in `image_sizes` get their width and height."""
    env: dict[str, Any] = {"image_sizes": image_sizes or {}, "images": 0}
    return sanitize_html(_CELL_ALIGN.sub(r'<\1 align="\2">', _renderer.render(source, env)))


_IMAGE = re.compile(r"<img\s[^>]*>")
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')


def first_image(html: str) -> tuple[str, tuple[int, int] | None] | None:
    """The address of the first image in sanitized HTML, with its width and height when
    it has them (an entry's picture for link previews: `og:image`)."""
    tag = _IMAGE.search(html)
    if tag is None:
        return None
    attributes = dict(_ATTRIBUTE.findall(tag[0]))
    if not attributes.get("src"):
        return None
    width, height = attributes.get("width", ""), attributes.get("height", "")
    size = (int(width), int(height)) if width.isdigit() and height.isdigit() else None
    return unescape(attributes["src"]), size


_INLINE_TAGS = re.compile(
    r"</?(?:a|abbr|b|code|del|em|i|kbd|mark|s|small|span|strong|sub|sup|u)(?:\s[^>]*)?>"
)
"""Tags inside a run of text: they go without a trace ("*text*." reads "text.")."""
_BLOCK_ENDS = re.compile(r"</(?:p|h[1-6]|li|pre|blockquote|td|th|tr|table|ul|ol)>|<hr\s*/?>")
"""Where a block ends (a paragraph, a heading, a list item, a code block, a table cell):
its words end a sentence, not run into the next block's."""
_CODE_BLOCK = re.compile(r"<pre>.*?</pre>", re.DOTALL)
"""Each line of a code block reads as a block of its own."""
_TAGS = re.compile(r"<[^>]+>")
"""Every other tag (an image, a line break, an opening block tag): a space."""
_SPACE = re.compile(r"\s+")
_SENTENCE_ENDS = tuple(".!?…:;,")


def _words(block: str) -> str:
    return _SPACE.sub(" ", unescape(_TAGS.sub(" ", block))).strip()


def plain_text(html: str, limit: int | None = None) -> str:
    """The text of sanitized HTML, for excerpts, meta descriptions and search: each block
    (heading, paragraph, list item, line of code, cell) ends a sentence, so `# Setup` and
    the paragraph under it read "Setup. Install it." and not "Setup Install it."."""
    html = _CODE_BLOCK.sub(lambda block: block[0].strip().replace("\n", "</pre>"), html)
    blocks = [
        words for words in map(_words, _BLOCK_ENDS.split(_INLINE_TAGS.sub("", html))) if words
    ]
    text = " ".join(
        words if words.endswith(_SENTENCE_ENDS) else f"{words}." for words in blocks[:-1]
    )
    text = f"{text} {blocks[-1]}".strip() if blocks else ""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text
