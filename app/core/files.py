"""Files that follow database rows: a session remembers which files to remove when its
transaction commits (say, deleted media) and which when it does not (new uploads: media,
an import's CSV), so a rolled-back change leaves no file behind and a committed deletion
leaves none either."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

_PENDING_KEY = "keel.pending_files"


def _pending(session: AsyncSession) -> dict[str, list[Path]]:
    return session.info.setdefault(_PENDING_KEY, {"commit": [], "rollback": []})


def remove_on_rollback(session: AsyncSession, path: Path) -> None:
    """Remove `path` unless the session's transaction commits."""
    _pending(session)["rollback"].append(path)


def remove_on_commit(session: AsyncSession, path: Path) -> None:
    """Remove `path` once the session's transaction commits."""
    _pending(session)["commit"].append(path)


def remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:
        remove_files(pending["commit"])


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or transaction.nested:
        return
    pending = session.info.pop(_PENDING_KEY, None)
    if pending:  # the transaction ended without a commit
        remove_files(pending["rollback"])
