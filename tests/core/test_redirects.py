"""Where a page may send the browser next: app/core/redirects.py.

The HTTP behaviour (sign-in with hostile `next` values, both legs) is tested in
tests/accounts/test_sign_in.py and tests/core/test_errors.py, and in Chromium in
tests/browser/test_sign_in.py; this is what no HTTP client can send.
"""

from __future__ import annotations

import pytest

from app.core.redirects import safe_next, same_site_path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/\ud800/x", None),  # a lone surrogate cannot be encoded: no page has one
        ("\x00\x1f /admin \x00", "/admin"),
        ("/a\x00b", "/a%00b"),
        ("/\x7f", "/%7F"),
        ("\u00a0//evil.example", None),  # NBSP is not stripped: no leading slash, no path
        ("/?next=//evil.example", "/?next=//evil.example"),  # a query is not a host
        (None, None),
    ],
)
def test_same_site_path_reads_a_target_as_a_browser_would(
    target: str | None, path: str | None
) -> None:
    assert same_site_path(target) == path
    assert safe_next(target, "/home") == (path or "/home")
