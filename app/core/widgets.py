"""Dashboard widgets: small panels that something above the dashboard's domain (an active
plugin, through the plugin host) shows on the admin dashboard.

`DASHBOARD_WIDGETS` is a `Registry` the composition root hands to whoever adds widgets
(`create_app` gives it to the plugin host), and the dashboard reads it (`app/system`): the
two are sibling domains that never import each other. The dashboard only lists the
widgets; each one is fetched as its own fragment (`render`), so a slow or failing widget
costs the dashboard nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request
from markupsafe import Markup

from app.core.registry import Registry


class WidgetFailed(Exception):
    """A widget raised or ran past its time limit (already logged and counted by whoever
    ran it); the dashboard shows a small "this widget failed" box instead."""


@dataclass(frozen=True)
class DashboardWidget:
    """One widget: the `number`th of `source` (a plugin's name), headed `title`;
    `render(request)` gives its HTML (escaped where it must be) or raises WidgetFailed."""

    source: str
    number: int
    title: str
    render: Callable[[Request[Any, Any, Any]], Awaitable[Markup]]

    @property
    def key(self) -> str:
        return f"{self.source}/{self.number}"


DASHBOARD_WIDGETS: Registry[str, DashboardWidget] = Registry(
    "dashboard widget", key=lambda widget: widget.key
)
