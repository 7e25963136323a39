"""Route guards: every route states the role it needs.

`requires(Role.x)` lets a caller in when their role is at least `x`; without a signed-in
caller it answers 401 (pages turn that into a sign-in redirect), with too low a role 403.
`public` is the explicit "anyone" guard, so a test can check that no route forgot one.
Guards are coroutines: Litestar runs plain functions in a thread, which costs a hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from app.accounts.models import Role

Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]


def requires(role: Role) -> Guard:
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        user = connection.scope.get("user")
        if user is None:
            raise NotAuthorizedException(
                "Sign in to continue.", headers={"WWW-Authenticate": 'Bearer realm="keel"'}
            )
        if not user.has(role):
            raise PermissionDeniedException(f"This needs the {role.name} role or higher.")

    guard.required_role = role  # type: ignore[attr-defined]
    guard.__name__ = f"requires_{role.name}"
    return guard


async def public(_: ASGIConnection, __: BaseRouteHandler) -> None:
    """Anyone, signed in or not."""


public.required_role = Role.guest  # type: ignore[attr-defined]

viewer = requires(Role.viewer)
editor = requires(Role.editor)
admin = requires(Role.admin)


async def metrics_reader(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """`/metrics`: the METRICS_TOKEN bearer, or an admin; never anyone else."""
    user = connection.scope.get("user")
    if user is not None and user.via == "metrics_token":
        return
    await admin(connection, handler)


metrics_reader.required_role = Role.admin  # type: ignore[attr-defined]


def required_role(handler: BaseRouteHandler) -> Role | None:
    """The role a route handler's guards demand (None when it declares none)."""
    guards = [getattr(g, "func", g) for g in handler.resolve_guards()]
    roles = [g.required_role for g in guards if hasattr(g, "required_role")]
    return max(roles) if roles else None
