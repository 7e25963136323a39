"""Keel's test kit for plugins (keel/testing.py) on a plugin of the test's own with a job:
the lifecycle steps, jobs run to completion, the plugin's tables read through its context,
and what a site leaves behind (both legs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, Table, func, select

from app.extensions.services.isolation import PluginStorage
from app.settings import Settings
from keel.testing import PluginSite, PluginStepFailed, assert_problem, plugin_site
from tests.conftest import count_rows

MANIFEST = """[plugin]
name = "tally"
version = "1.0.0"
keel = ">=0.1,<1"
entry_point = "tally.plugin:Tally"
time_limit = 5
"""

PLUGIN = '''
from sqlalchemy import Column, Integer, func, insert, select

from keel.plugin import Context, Job, JobContext, Plugin, PluginContext, get, post, public


def counts(ctx):
    return ctx.storage.table(
        "counts", Column("id", Integer, primary_key=True), Column("n", Integer)
    )


async def count(ctx: PluginContext, job: JobContext) -> dict:
    """Adds a row of `n`; a negative `n` fails."""
    n = int(job.payload.get("n", 1))
    if n < 0:
        raise ValueError("no negative counts")
    async with ctx.session() as session:
        await session.execute(insert(counts(ctx)).values(n=n))
    return {"counted": n}


@get("/total", guards=[public])
async def total(ctx: Context) -> dict:
    async with ctx.session() as session:
        found = await session.scalar(select(func.coalesce(func.sum(counts(ctx).c.n), 0)))
    return {"total": int(found)}


@post("/count", guards=[public], status_code=202)
async def count_later(ctx: Context) -> dict:
    async with ctx.session() as session:
        job_id = await ctx.enqueue(session, "tally.count", {"n": 1})
    return {"job": job_id}


class Tally(Plugin):
    api_routes = [total, count_later]
    jobs = [Job("tally.count", count, max_attempts=2)]
'''

MIGRATION = """from sqlalchemy import Column, Integer


def upgrade(connection, storage):
    storage.table("counts", Column("id", Integer, primary_key=True), Column("n", Integer))
    storage.metadata.create_all(connection)
"""


def write_plugin(folder: Path, *, failing_install: bool = False) -> Path:
    (folder / "tally").mkdir(parents=True)
    (folder / "migrations").mkdir()
    (folder / "plugin.toml").write_text(MANIFEST)
    (folder / "tally" / "__init__.py").write_text("")
    plugin = PLUGIN
    if failing_install:
        plugin += "\n    async def on_install(self, ctx):\n        raise RuntimeError('no room')\n"
    (folder / "tally" / "plugin.py").write_text(plugin)
    (folder / "migrations" / "0001_counts.py").write_text(MIGRATION)
    return folder


@pytest.fixture
def tally(tmp_path: Path) -> Path:
    """The plugin's folder, named otherwise than the plugin (the kit copies it under its name)."""
    return write_plugin(tmp_path / "source" / "keel-tally")


def counts(site: PluginSite) -> Table:
    """The plugin's table, as its code declares it."""
    return PluginStorage(site.name, site.runtime.engine.dialect.name).table(
        "counts", Column("id", Integer, primary_key=True), Column("n", Integer)
    )


async def total(site: PluginSite) -> int:
    async with site.client() as anyone:
        answer = await anyone.get("/api/plugins/tally/total")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


async def test_queued_jobs_of_the_plugin_run_to_completion(
    settings: Settings, tally: Path, tmp_path: Path
) -> None:
    async with plugin_site(tally, settings, tmp_path / "site") as site:
        assert await site.run_jobs() == []  # nothing waits: it returns at once
        first = await site.enqueue("tally.count", {"n": 2})
        second = await site.enqueue("tally.count", {"n": 3})
        failing = await site.enqueue("tally.count", {"n": -1})
        ran = await site.run_jobs()
        assert [(job.id, job.status) for job in ran] == [
            (first, "succeeded"),
            (second, "succeeded"),
            (failing, "dead"),  # both attempts failed, the retry without waiting
        ]
        assert ran[0].result == {"counted": 2}
        assert "no negative counts" in (ran[2].last_error or "")
        assert await total(site) == 5
        async with site.ctx.session() as session:
            assert sorted((await session.scalars(select(counts(site).c.n))).all()) == [2, 3]
        assert await site.run_jobs() == []


async def test_a_job_the_plugin_queues_itself_runs_too(
    settings: Settings, tally: Path, tmp_path: Path
) -> None:
    async with plugin_site(tally, settings, tmp_path / "site") as site:
        async with site.client() as visitor:
            queued = await visitor.post("/api/plugins/tally/count")
        assert queued.status_code == 202, queued.text
        ran = await site.run_jobs()
        assert [(job.id, job.status) for job in ran] == [(queued.json()["job"], "succeeded")]
        assert await total(site) == 1


async def test_the_lifecycle_steps_are_keel_s_own(
    settings: Settings, tally: Path, tmp_path: Path
) -> None:
    async with plugin_site(tally, settings, tmp_path / "site", activate=False) as site:
        assert await site.status() == "installed"
        async with site.client() as anyone:
            assert_problem(await anyone.get("/api/plugins/tally/total"), 404)
        assert await site.activate() == "active"
        assert await total(site) == 0
        assert await site.deactivate() == "inactive"
        async with site.client() as anyone:
            assert_problem(await anyone.get("/api/plugins/tally/total"), 404)
        async with site.ctx.session() as session:  # inactive: a context made for the test
            assert await session.scalar(select(func.count()).select_from(counts(site))) == 0
        await site.uninstall()
        assert await site.status() is None
    assert await count_rows(settings, "plugin_registry") == 0
    assert await count_rows(settings, "users") == 0  # the accounts went with the site


async def test_a_failing_install_raises_with_the_admin_s_message(
    settings: Settings, tmp_path: Path
) -> None:
    folder = write_plugin(tmp_path / "tally", failing_install=True)
    with pytest.raises(PluginStepFailed, match="no room"):
        async with plugin_site(folder, settings, tmp_path / "site"):
            pass
    assert await count_rows(settings, "plugin_registry") == 0


def test_the_kit_follows_keel_plugin_s_version_and_exposes_what_it_lists() -> None:
    import keel.plugin
    import keel.testing

    assert keel.testing.API_VERSION == keel.plugin.API_VERSION
    assert all(hasattr(keel.testing, name) for name in keel.testing.__all__)
