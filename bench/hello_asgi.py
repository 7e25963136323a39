"""The machine's ceiling: the smallest ASGI app granian can serve (plain text, no framework).

    .venv/bin/python -m granian --interface asgi --workers 1 --no-ws bench.hello_asgi:app
Started by bench/content_load.py. See docs/performance.md.
"""

BODY = b"Hello, world!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(START)
    await send({"type": "http.response.body", "body": BODY})
