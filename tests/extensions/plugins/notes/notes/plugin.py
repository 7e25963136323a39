"""`notes`: a table of its own (its migration), a note written by its install hook, an API
to list and add notes, and settings; it imports nothing of Keel but `keel.plugin`."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, insert, select

from keel.plugin import Context, JSONBody, Plugin, PluginContext, get, post, public


def notes_table(ctx: PluginContext):  # type: ignore[no-untyped-def]
    return ctx.storage.table(
        "notes", Column("id", Integer, primary_key=True), Column("text", String(200))
    )


@get("/notes", guards=[public])
async def list_notes(ctx: Context) -> dict[str, object]:
    table = notes_table(ctx)
    async with ctx.session() as session:
        rows = (await session.execute(select(table.c.text).order_by(table.c.id))).scalars()
        texts = list(rows)
    greeting = ctx.settings.get("greeting", "Hello")
    return {"greeting": greeting.upper() if ctx.settings.get("shout") else greeting, "notes": texts}


@post("/notes", guards=[public], status_code=201)
async def add_note(ctx: Context, data: JSONBody[dict[str, str]]) -> dict[str, str]:
    async with ctx.session() as session:
        await session.execute(insert(notes_table(ctx)).values(text=data["text"][:200]))
    return {"text": data["text"][:200]}


class Notes(Plugin):
    api_routes = [list_notes, add_note]

    async def on_install(self, ctx: PluginContext) -> None:
        async with ctx.session() as session:
            await session.execute(insert(notes_table(ctx)).values(text="installed"))
