"""Files that follow database rows: a session remembers which files to remove when its
transaction commits (say, deleted media) and which when it does not (new uploads: media,
an import's CSV), so a rolled-back change leaves no file behind and a committed deletion
leaves none either. Run by SQLAlchemy at the end of the transaction (`app.core.events`'s
`on_commit` / `on_rollback`), whoever opened the session."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.events import on_commit, on_rollback


def remove_on_rollback(session: AsyncSession, path: Path) -> None:
    """Remove `path` unless the session's transaction commits."""
    on_rollback(session, partial(remove_files, [path]))


def remove_on_commit(session: AsyncSession, path: Path) -> None:
    """Remove `path` once the session's transaction commits."""
    on_commit(session, partial(remove_files, [path]))


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
