"""Route guards. Every route states what it needs.

Accounts and roles arrive with the identity issue; until then the admin area opens only in
development, and only to a browser on the same machine.
"""

from __future__ import annotations

from ipaddress import ip_address

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ip_address(address).is_loopback
    except ValueError:
        return False


def local_admin_only(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admin pages: development mode and a loopback client, until sign-in exists."""
    settings = connection.app.state.settings
    client_ip = connection.scope.get("state", {}).get("client_ip")
    if settings.app.is_production or not _is_loopback(client_ip):
        raise PermissionDeniedException(
            "The admin area needs an administrator sign-in, which this version does not have yet."
        )
