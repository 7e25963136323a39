"""The `export` job: users, content or the audit log as a CSV or JSON file to download.

Rows are read in keyset batches, each batch reported as progress. The file gets a random
name and expires after EXPORT_RETENTION_HOURS (cleanup removes it). The users export
never carries password hashes or other secrets; CSV cells that a spreadsheet would run as
a formula are escaped.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO
from uuid import UUID

import msgspec
from sqlalchemy import func, select

from app.accounts.models import AuditEntry, Role, User
from app.content.models import Entry
from app.jobs.services.registry import JobContext, job_handler

BATCH = 500
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ExportPayload(msgspec.Struct, forbid_unknown_fields=True):
    dataset: Literal["users", "content", "audit"]
    format: Literal["csv", "json"] = "csv"


@dataclass(frozen=True)
class Dataset:
    model: Any
    columns: tuple[str, ...]
    """The model's attributes exported, in order (never a secret: no password hashes)."""

    def row(self, item: Any) -> tuple[Any, ...]:
        return tuple(getattr(item, column) for column in self.columns)


DATASETS = {
    "users": Dataset(
        User,
        ("id", "username", "email", "display_name", "role", "is_active", "created_at",
         "last_login_at"),
    ),
    "content": Dataset(
        Entry,
        ("id", "kind", "title", "slug", "status", "published_at", "author_id", "excerpt",
         "view_count", "created_at", "updated_at"),
    ),
    "audit": Dataset(
        AuditEntry,
        ("id", "created_at", "actor", "user_id", "action", "resource_type", "resource_id",
         "ip_address", "details"),
    ),
}  # fmt: skip


def export_role(payload: ExportPayload) -> Role:
    """Editors may export content; users and the audit log are for admins."""
    return Role.editor if payload.dataset == "content" else Role.admin


def plain(value: Any) -> Any:
    """A cell as JSON has it: times in ISO 8601, ids as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def csv_cell(value: Any) -> str:
    """A CSV cell that no spreadsheet runs as a formula (`'` before = + - @)."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


@job_handler(
    "export",
    timeout=1800,
    max_attempts=3,
    payload=ExportPayload,
    role=Role.editor,
    role_for=export_role,
    expiring_files=True,
)
async def run_export(ctx: JobContext[ExportPayload]) -> dict[str, Any]:
    """Export users, content or the audit log as CSV or JSON."""
    dataset = DATASETS[ctx.payload.dataset]
    model = dataset.model
    async with ctx.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(model)) or 0
    name = f"{ctx.payload.dataset}-{secrets.token_hex(8)}.{ctx.payload.format}"
    as_csv = ctx.payload.format == "csv"
    media_type = "text/csv; charset=utf-8" if as_csv else "application/json"
    done = 0
    with ctx.writing(name, media_type) as out:
        write = _csv_writer(out, dataset.columns) if as_csv else _json_writer(out, dataset.columns)
        last: Any = None
        while True:
            statement = select(model).order_by(model.id).limit(BATCH)
            if last is not None:
                statement = statement.where(model.id > last)
            async with ctx.sessionmaker() as session:
                batch = list(await session.scalars(statement))
            write([dataset.row(item) for item in batch])
            if batch:
                last = batch[-1].id
            done += len(batch)
            await ctx.progress(min(99, done * 100 // max(total, 1)), f"{done} of {total} rows")
            if len(batch) < BATCH:
                break
        if not as_csv:
            out.write(JSON_END)
    await ctx.progress(100, f"{done} rows exported")
    return {"dataset": ctx.payload.dataset, "format": ctx.payload.format, "rows": done}


Rows = list[tuple[Any, ...]]
JSON_END = "\n]\n"
"""Closes the array `_json_writer` opened."""


def _csv_writer(out: TextIO, columns: tuple[str, ...]) -> Callable[[Rows], None]:
    """Writes the header, then each batch of rows as it comes."""
    writer = csv.writer(out)
    writer.writerow(columns)

    def write(rows: Rows) -> None:
        writer.writerows([csv_cell(value) for value in row] for row in rows)

    return write


def _json_writer(out: TextIO, columns: tuple[str, ...]) -> Callable[[Rows], None]:
    """Opens one JSON array and writes each batch into it, one object per line; the
    caller closes it with JSON_END."""
    out.write("[")
    separator = "\n"

    def write(rows: Rows) -> None:
        nonlocal separator
        for row in rows:
            record = dict(zip(columns, map(plain, row), strict=True))
            out.write(separator + json.dumps(record, ensure_ascii=False))
            separator = ",\n"

    return write


def to_csv(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return out.getvalue()
