"""One app, another runtime: `attach_runtime` wires it as `create_app` wires its own."""

from __future__ import annotations

from litestar import Litestar

from app.accounts.models import User
from app.asgi import attach_runtime, create_app
from app.content.services.page_cache import PageCache
from app.core.events import PUBLIC_CHANGED, mark_public_change
from app.core.runtime import runtime_of
from app.runtime import build_runtime
from app.settings import Settings
from tests.conftest import client_for


async def test_an_app_given_another_runtime_serves_with_it_alone(
    settings: Settings, accounts: dict[str, User]
) -> None:
    app: Litestar = create_app(settings)
    first = runtime_of(app.state)
    second = build_runtime(settings)
    try:
        attach_runtime(app, second)
        assert app.state.runtime is second and second.routing is first.routing
        async with client_for(app) as client:
            assert (await client.get("/api/v1/site")).status_code == 200
            assert (await client.get("/login")).status_code == 200
        # the request figures and the page cache in front of the router are the new ones
        assert second.figures.requests and not first.figures.requests
        front_cache = second.service(PageCache)
        layer: object = app.asgi_handler
        while not hasattr(layer, "cache"):
            layer = getattr(layer, "app")  # noqa: B009
        assert getattr(layer, "cache") is front_cache  # noqa: B009
        # after-commit subscribers are the new runtime's: a public change reaches its cache
        generation = await front_cache.current_generation(force=True)
        async with second.sessionmaker() as session, session.begin():
            mark_public_change(session)
        await second.events.deliver(session)
        assert await front_cache.current_generation(force=True) != generation
        assert PUBLIC_CHANGED in {s.event for s in second.events.subscriptions}
    finally:
        await first.close()
        await second.close()
