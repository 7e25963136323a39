"""Links that leave a page: app/core/templating.py `site_base` without PUBLIC_URL."""

from __future__ import annotations

import pytest

from app.core.templating import listening_address


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8000, "http://127.0.0.1:8000"),
        ("", 8080, "http://127.0.0.1:8080"),
        ("::", 8000, "http://localhost:8000"),
        ("[::]", 8000, "http://localhost:8000"),
        ("::1", 9000, "http://[::1]:9000"),
        ("192.0.2.10", 8000, "http://192.0.2.10:8000"),
        ("keel.internal", 80, "http://keel.internal:80"),
    ],
)
def test_development_links_use_the_address_keel_serve_listens_on(
    host: str, port: int, address: str
) -> None:
    assert listening_address(host, port) == address
