"""Parts of the site by address: a prefix names whole path segments.

`/api` is `/api` and everything under `/api/`, never `/apix` or `/api-old`: those are
other addresses (a page's slug may begin like a machine path, as `/health-tips` does).
Every list of address prefixes that decides how a request is treated (who may call,
CSRF, the error format, caching, the rate limit, first run) is a `PathPrefixes`.
"""

from __future__ import annotations


class PathPrefixes:
    """Addresses at or under any of some prefixes (given with or without a final `/`)."""

    __slots__ = ("_exact", "_under", "prefixes")

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = tuple(prefix.rstrip("/") for prefix in prefixes)
        self._exact = frozenset(self.prefixes)
        self._under = tuple(prefix + "/" for prefix in self.prefixes)

    def matches(self, path: str) -> bool:
        """Whether `path` is one of the prefixes or under one."""
        return path in self._exact or path.startswith(self._under)


API = PathPrefixes("/api")
"""The JSON API (`/api/v1`, the plugins' `/api/plugins/<name>`)."""
METRICS_PATH = "/metrics"
MACHINE = PathPrefixes("/api", "/health", METRICS_PATH, "/schema")
"""Addresses for programs, not people: errors are problem details, never a page."""
