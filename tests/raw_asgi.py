"""Requests through an app's ASGI interface exactly as given, as raw bytes.

httpx normalises what it sends (it drops `../`, refuses raw bytes in a query); a socket
does not. Hostile-input tests use this to send a request as it can arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from litestar import Litestar


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str:
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), "")


async def call(
    app: Litestar,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
) -> Reply:
    """One request through the app's ASGI interface, with the target exactly as given."""
    raw_path, _, query = target.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("203.0.113.7", 50123),
        "server": ("testserver", 80),
        "extensions": {},
    }
    sent = False
    status = 0
    reply_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, reply_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            reply_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)  # type: ignore[arg-type]
    except Exception as exc:  # what escapes the app, the server answers with a 500
        return Reply(500, [], f"escaped the app: {exc!r}".encode())
    return Reply(status, reply_headers, b"".join(chunks))
