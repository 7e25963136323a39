"""Compression of text responses (gzip and brotli), chosen by the request's Accept-Encoding.

One layer in front of the router (`CompressionMiddleware`) compresses what the routes
answer; the page cache keeps its pages compressed already (`precompress`, at fill), so a
cached hit does no compression work, and a response with a strong ETag (the static
files) is compressed once per process and kept under that ETag. Never compressed: bodies
under `MINIMUM_SIZE`, types that are compressed already (images, archives), event
streams, answers to Range requests, and responses that carry a Content-Encoding.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Protocol

import brotli
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

MINIMUM_SIZE = 500
"""Below this a compressed body saves less than the header and the work cost."""
BROTLI, GZIP = "br", "gzip"
STORED_FIRST = (BROTLI, GZIP)
"""Encodings of what is compressed once (cached pages, static files), preferred in this
order when the client weighs them alike: brotli's gain over gzip is at high quality."""
LIVE_FIRST = (GZIP, BROTLI)
"""Encodings of what is compressed per response: at a fast setting brotli is no smaller
than gzip and costs several times as much."""
COMPRESSIBLE = frozenset(
    {
        b"application/json",
        b"application/javascript",
        b"application/xml",
        b"application/rss+xml",
        b"application/atom+xml",
        b"application/manifest+json",
        b"application/vnd.oai.openapi",
        b"application/x-yaml",
        b"application/yaml",
        b"image/svg+xml",
    }
)
KEPT_ONCE = 128
"""Responses with a strong ETag whose compressed bodies a process keeps (static files)."""
KEPT_ONCE_LARGEST = 1 << 20


def is_compressible(content_type: bytes) -> bool:
    """Text of any kind (HTML, JSON, CSS, JS, SVG, feeds, text/plain), not event streams."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if media.startswith(b"text/"):
        return media != b"text/event-stream"
    return media in COMPRESSIBLE or media.endswith((b"+json", b"+xml"))


@lru_cache(maxsize=256)
def negotiate(accept_encoding: bytes, offered: tuple[str, ...] = STORED_FIRST) -> str | None:
    """The offered encoding the client weighs highest (RFC 9110 12.5.3: q-values, `*`,
    `q=0` refuses), the first offered on a tie; None for identity."""
    weights: dict[str, float] = {}
    for part in accept_encoding.decode("latin-1").split(","):
        coding, _, parameters = part.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        weight = 1.0
        name, _, value = parameters.partition("=")
        if name.strip().lower() == "q":
            try:
                weight = min(max(float(value), 0.0), 1.0)
            except ValueError:
                weight = 0.0
        weights["gzip" if coding == "x-gzip" else coding] = weight
    best, best_weight = None, 0.0
    for coding in offered:
        weight = weights.get(coding, weights.get("*", 0.0))
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


def compress(body: bytes, coding: str, *, once: bool = False) -> bytes:
    """`body` in `coding`; `once` when the result is kept (cached pages, static files):
    then a slower, smaller setting pays."""
    if coding == BROTLI:
        return bytes(brotli.compress(body, quality=6 if once else 4, mode=brotli.MODE_TEXT))
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31) if once else _fast_gzip()
    return encoder.compress(body) + encoder.flush()


def _fast_gzip() -> Any:
    """A gzip encoder for a body compressed per request: an 8 KiB window and a smaller
    memory level make it 17 µs instead of 114 µs for a 6.5 KB JSON list here (setting up
    the default encoder's buffers costs more than compressing), for 7 % more bytes."""
    return zlib.compressobj(1, zlib.DEFLATED, 16 + 13, 6)


def precompress(content_type: bytes, body: bytes) -> dict[str, bytes]:
    """The compressed variants of a body that is kept (a cached page), by encoding; none
    for a small or already compressed one."""
    if len(body) < MINIMUM_SIZE or not is_compressible(content_type):
        return {}
    return {coding: compress(body, coding, once=True) for coding in STORED_FIRST}


def add_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` whose Vary names Accept-Encoding (joined to the Vary already there)."""
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            if b"accept-encoding" in value.lower() or value.strip() == b"*":
                return headers
            headers = list(headers)
            headers[index] = (key, value + b", Accept-Encoding")
            return headers
    return [*headers, (b"vary", b"Accept-Encoding")]


class _Encoder(Protocol):
    def chunk(self, data: bytes, last: bool) -> bytes: ...


class _Gzip:
    def __init__(self) -> None:
        self.encoder = _fast_gzip()

    def chunk(self, data: bytes, last: bool) -> bytes:
        out = self.encoder.compress(data)
        return out + self.encoder.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class _Brotli:
    def __init__(self) -> None:
        self.encoder = brotli.Compressor(quality=4, mode=brotli.MODE_TEXT)

    def chunk(self, data: bytes, last: bool) -> bytes:
        out = self.encoder.process(data)
        return out + (self.encoder.finish() if last else self.encoder.flush())


class CompressionMiddleware:
    """Compress text responses by Accept-Encoding, once per response at the boundary.

    Every compressible response gets `Vary: Accept-Encoding`, whatever is sent. A body
    sent whole is compressed whole (Content-Length set again); a streamed one is
    compressed chunk by chunk, each flushed, so nothing is held back; an ETag becomes weak
    (the compressed bytes differ, the meaning does not) and Accept-Ranges is dropped."""

    def __init__(self, app: ASGIApp, minimum_size: int = MINIMUM_SIZE) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.kept: OrderedDict[tuple[str, bytes, str], bytes] = OrderedDict()
        """Compressed bodies of responses with a strong ETag, by path, ETag and encoding."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        accept = b""
        ranged = False
        for key, value in scope["headers"]:
            if key == b"accept-encoding":
                accept = value
            elif key == b"range":
                ranged = True
        coding = negotiate(accept, LIVE_FIRST) if accept and not ranged else None
        await self.app(scope, receive, _CompressingSend(self, scope["path"], coding, send))

    def keep(self, key: tuple[str, bytes, str], body: bytes, *, best: bool = True) -> bytes:
        """`body` compressed for `key` (path, strong ETag, encoding), once per process;
        at the slower, smaller setting if `best` (what lives as long as the process)."""
        held = self.kept.get(key)
        if held is None:
            held = self.kept[key] = compress(body, key[2], once=best)
            while len(self.kept) > KEPT_ONCE:
                self.kept.popitem(last=False)
        else:
            self.kept.move_to_end(key)
        return held


class _CompressingSend:
    """The send of one response: holds the start until the body shows its size."""

    def __init__(
        self, layer: CompressionMiddleware, path: str, coding: str | None, send: Send
    ) -> None:
        self.layer = layer
        self.path = path
        self.coding = coding
        self.send = send
        self.start: HTTPResponseStartEvent | None = None
        self.passing = False
        self.encoder: _Encoder | None = None
        self.etag: bytes | None = None
        self.json = False
        """A JSON answer: kept by its ETag only until its data changes (an editors' list,
        app/content/services/list_cache.py), so compressed at the fast setting."""
        self.buffered: list[bytes] | None = None

    async def __call__(self, message: Message) -> None:
        if self.passing:
            await self.send(message)
        elif message["type"] == "http.response.start":
            await self._started(message)
        elif message["type"] != "http.response.body" or self.start is None:
            if self.start is not None:  # an extension (pathsend): the body is not ours
                self.passing = True
                await self.send(self.start)
            await self.send(message)
        elif self.encoder is not None:
            last = not message.get("more_body", False)
            await self._send_body(self.encoder.chunk(message.get("body", b""), last), not last)
        else:
            await self._body(message.get("body", b""), message.get("more_body", False))

    async def _started(self, message: HTTPResponseStartEvent) -> None:
        headers = list(message.get("headers", []))
        content_type = b""
        for key, value in headers:
            lowered = key.lower()
            if lowered == b"content-encoding":
                content_type = b""
                break
            if lowered == b"content-type":
                content_type = value
                self.json = value.startswith(b"application/json")
            elif lowered == b"content-length" and int(value) < self.layer.minimum_size:
                content_type = b""
                break
            elif lowered == b"etag" and not value.startswith(b"W/"):
                self.etag = value
        status = message["status"]
        if status < 200 or status in (204, 206, 304) or not is_compressible(content_type):
            self.passing = True
            await self.send(message)
            return
        message = {**message, "headers": add_vary(headers)}
        if self.coding is None:
            self.passing = True
            await self.send(message)
            return
        self.start = message

    async def _body(self, body: bytes, more: bool) -> None:
        assert self.start is not None and self.coding is not None
        if self.buffered is not None or (more and self.etag is not None):
            self.buffered = [*(self.buffered or []), body]
            if more and sum(map(len, self.buffered)) <= KEPT_ONCE_LARGEST:
                return
            body, self.buffered = b"".join(self.buffered), None
        if more:  # streamed (or too large to keep): compressed as it comes
            self.encoder = _Gzip() if self.coding == GZIP else _Brotli()
            await self.send(self._compressed_start(None))
            await self._send_body(self.encoder.chunk(body, False), True)
            return
        if len(body) < self.layer.minimum_size:
            self.passing = True
            await self.send(self.start)
            await self._send_body(body, False)
            return
        if self.etag is not None:
            key = (self.path, self.etag, self.coding)
            compressed = self.layer.keep(key, body, best=not self.json)
        else:
            compressed = compress(body, self.coding)
        await self.send(self._compressed_start(len(compressed)))
        await self._send_body(compressed, False)

    async def _send_body(self, body: bytes, more: bool) -> None:
        await self.send({"type": "http.response.body", "body": body, "more_body": more})

    def _compressed_start(self, length: int | None) -> HTTPResponseStartEvent:
        assert self.start is not None and self.coding is not None
        headers = [
            (key, b"W/" + value if key.lower() == b"etag" and value.startswith(b'"') else value)
            for key, value in self.start.get("headers", [])
            if key.lower() not in (b"content-length", b"accept-ranges")
        ]
        headers.append((b"content-encoding", self.coding.encode()))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        return {**self.start, "headers": headers}
