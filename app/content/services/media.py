"""The media library's rules: what may be uploaded, how it is stored, listed and deleted.

A file's type is decided by its bytes, never by its name: only PNG, JPEG, GIF, WebP (each
opened and verified with Pillow) and PDF are kept. Files are stored under MEDIA_DIR as
`<32 hex>.<ext>`, written to a temporary file in the same directory and renamed into place.
The database row and the file live and die together: a failed upload leaves neither, a
file is removed only once its row's deletion is committed, and a file written for a
transaction that rolls back is removed again.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import Any, Protocol
from uuid import UUID

import anyio.to_thread
from PIL import Image
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import User
from app.accounts.services.audit import Actor, record
from app.content.models import Media
from app.content.services.events import emit_media_uploaded
from app.core.errors import DomainError, InvalidField, NotFound
from app.core.files import remove_files, remove_on_commit, remove_on_rollback
from app.core.pagination import Page, PageRequest, paginate
from app.site_settings.services import SettingDefinition, define

UPLOAD_MAX_BYTES = define(
    SettingDefinition(
        "upload_max_bytes",
        int,
        10 * 1024 * 1024,
        "Largest media file (image or PDF) that may be uploaded, in bytes.",
        label="Largest media upload (bytes)",
        minimum=1024,
        maximum=200 * 1024 * 1024,
    )
)

HARD_MAX_BYTES: int = UPLOAD_MAX_BYTES.maximum or 200 * 1024 * 1024
"""No upload is ever larger than this, whatever the runtime setting says."""
MAX_IMAGE_PIXELS = 40_000_000
NAME_MAX_LENGTH = 255
ALT_MAX_LENGTH = 300
CHUNK_BYTES = 1024 * 1024
KINDS = ("image", "pdf")

STORED_NAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif|webp|pdf)$")
"""The only names `/media/...` serves: what `store_upload` generates, nothing else."""


class MediaError(DomainError):
    """A rule about media said no: one of the kinds below."""


class InvalidMedia(MediaError, InvalidField):
    """An upload (or a filter over the library) breaks a rule."""


class MediaNotFound(MediaError, NotFound):
    """No such media file."""


@dataclass(frozen=True)
class FileType:
    content_type: str
    extension: str
    pillow_format: str | None
    """The format Pillow must recognise for an image; None for a PDF."""


PNG = FileType("image/png", "png", "PNG")
JPEG = FileType("image/jpeg", "jpg", "JPEG")
GIF = FileType("image/gif", "gif", "GIF")
WEBP = FileType("image/webp", "webp", "WEBP")
PDF = FileType("application/pdf", "pdf", None)
IMAGE_TYPES = frozenset(t.content_type for t in (PNG, JPEG, GIF, WEBP))
"""The images the upload check opens and verifies with Pillow: the only files a browser is
asked to show on the site (anything else, like a PDF that may carry JavaScript, is saved)."""


@dataclass(frozen=True)
class Inspected:
    type: FileType
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ListedMedia:
    """A media item as lists show it: the row plus its uploader's username (None once gone)."""

    media: Media
    uploaded_by: str | None


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | Awaitable[bytes]: ...


def detect_type(head: bytes) -> FileType | None:
    """The accepted type the first bytes of a file announce, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    return None


def inspect_file(path: Path) -> Inspected:
    """Check that the file is what its bytes claim; images get their dimensions.

    Raises MediaError for any other file, whatever it is called.
    """
    with path.open("rb") as handle:
        head = handle.read(16)
    file_type = detect_type(head)
    if file_type is None:
        raise InvalidMedia(
            "Only PNG, JPEG, GIF and WebP images and PDF files can be uploaded.", "file"
        )
    if file_type.pillow_format is None:
        return Inspected(file_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if image.format != file_type.pillow_format:
                    raise InvalidMedia("The image is damaged or not what it claims to be.", "file")
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_many_pixels()
                image.verify()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _too_many_pixels() from None
    except MediaError:
        raise
    except Exception:  # Pillow signals a broken file with many exception types
        raise InvalidMedia("The image is damaged or not what it claims to be.", "file") from None
    return Inspected(file_type, width, height)


def _too_many_pixels() -> InvalidMedia:
    limit = MAX_IMAGE_PIXELS // 1_000_000
    return InvalidMedia(f"The image is larger than {limit} megapixels.", "file")


def display_name(filename: str | None) -> str:
    """The uploaded file's name, safe to show: its last path part, without control
    characters, at most 255 characters (the extension kept). Never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = unicodedata.normalize("NFC", name).strip().strip(".").strip()
    if len(name) > NAME_MAX_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: NAME_MAX_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:NAME_MAX_LENGTH]
    return name or "upload"


def human_size(size: int) -> str:
    """`10 MiB`, `512 KiB`, `900 bytes`: sizes as messages and pages show them."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def media_url(media: Media) -> str:
    return f"/media/{media.stored_name}"  # MEDIA_PATH finds it in Markdown


MEDIA_PATH = re.compile(r"/media/([A-Za-z0-9][A-Za-z0-9._-]{0,79})")


async def image_sizes(session: AsyncSession, markdown: str) -> dict[str, tuple[int, int]]:
    """Width and height of the uploaded images `markdown` shows, by their address (what
    `render_markdown` needs to give them room before they load)."""
    names = set(MEDIA_PATH.findall(markdown))
    if not names:
        return {}
    rows = await session.execute(
        select(Media.stored_name, Media.width, Media.height).where(Media.stored_name.in_(names))
    )
    return {
        f"/media/{name}": (width, height)
        for name, width, height in rows.tuples()
        if width and height
    }


def is_image(media: Media) -> bool:
    """A verified image (see IMAGE_TYPES): shown inline, embedded as `![...]`."""
    return media.content_type in IMAGE_TYPES


def markdown_reference(media: Media) -> str:
    """What to paste into an entry: an image for images, a link for PDFs."""
    if is_image(media):
        return f"![{_escape_brackets(media.alt_text)}]({media_url(media)})"
    return f"[{_escape_brackets(media.original_name)}]({media_url(media)})"


def _escape_brackets(text: str) -> str:
    return re.sub(r"([\\\[\]])", r"\\\1", " ".join(text.split()))


async def _read(source: Readable, size: int) -> bytes:
    chunk = source.read(size)
    return await chunk if inspect.isawaitable(chunk) else chunk


async def _copy_limited(source: bytes | Readable, target: Path, max_bytes: int) -> int:
    """Copy at most `max_bytes` into `target`; refuse a source with even one byte more."""
    if isinstance(source, bytes | bytearray):
        if len(source) > max_bytes:
            raise _too_large(max_bytes)
        await anyio.Path(target).write_bytes(bytes(source))
        return len(source)
    size = 0
    with target.open("wb") as handle:
        while chunk := await _read(source, min(CHUNK_BYTES, max_bytes + 1 - size)):
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            await anyio.to_thread.run_sync(handle.write, chunk)
    return size


def _too_large(max_bytes: int) -> InvalidMedia:
    limit = human_size(max_bytes)
    return InvalidMedia(f"The file is larger than the upload limit of {limit}.", "file")


async def store_upload(
    session: AsyncSession,
    actor: Actor,
    media_dir: Path,
    max_bytes: int,
    filename: str | None,
    source: bytes | Readable,
    alt_text: str = "",
) -> Media:
    """Check, store and record one upload; raises MediaError and leaves nothing behind."""
    max_bytes = min(max_bytes, HARD_MAX_BYTES)
    alt = " ".join((alt_text or "").split())
    if len(alt) > ALT_MAX_LENGTH:
        raise InvalidMedia(f"Keep the alt text to {ALT_MAX_LENGTH} characters.", "alt_text")
    temp_path = await anyio.to_thread.run_sync(_temp_file, media_dir)
    final_path: Path | None = None
    try:
        size = await _copy_limited(source, temp_path, max_bytes)
        if size == 0:
            raise InvalidMedia("The file is empty.", "file")
        found = await anyio.to_thread.run_sync(inspect_file, temp_path)
        final_path = _move_into_place(temp_path, media_dir, found.type.extension)
        remove_on_rollback(session, final_path)
        media = Media(
            original_name=display_name(filename),
            stored_name=final_path.name,
            content_type=found.type.content_type,
            size=size,
            width=found.width,
            height=found.height,
            alt_text=alt,
            uploaded_by_id=actor.user_id,
        )
        session.add(media)
        await session.flush()
    except BaseException:
        remove_files([temp_path] if final_path is None else [temp_path, final_path])
        raise
    record(
        session,
        actor,
        "media.uploaded",
        "media",
        media.id,
        name=media.original_name,
        stored_name=media.stored_name,
        content_type=media.content_type,
        size=media.size,
    )
    emit_media_uploaded(session, media, media_url(media))
    return media


def _temp_file(media_dir: Path) -> Path:
    """An empty file in media_dir itself, so the final rename never crosses file systems."""
    media_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=media_dir, prefix=".upload-", suffix=".part")
    os.close(handle)
    return Path(name)


def _move_into_place(temp_path: Path, media_dir: Path, extension: str) -> Path:
    """Give the checked file its random name in one atomic rename."""
    final_path = media_dir / f"{token_hex(16)}.{extension}"
    os.chmod(temp_path, 0o644)
    os.replace(temp_path, final_path)
    return final_path


async def get_media(session: AsyncSession, media_id: UUID) -> Media:
    media = await session.get(Media, media_id)
    if media is None:
        raise MediaNotFound("No such media file.")
    return media


async def find_stored(session: AsyncSession, stored_name: str) -> Media | None:
    """The media item behind a `/media/<name>` URL, or None for any other name."""
    if not STORED_NAME.fullmatch(stored_name):
        return None
    return await session.scalar(select(Media).where(Media.stored_name == stored_name))


def stored_path(media_dir: Path, media: Media) -> Path:
    """Where a stored file lives; the name is checked, so the path is always in media_dir."""
    if not STORED_NAME.fullmatch(media.stored_name):
        raise MediaNotFound("No such media file.")
    return media_dir / media.stored_name


async def delete_media(
    session: AsyncSession, actor: Actor, media_dir: Path, media_id: UUID
) -> Media:
    """Delete the row now and the file once that deletion is committed."""
    media = await get_media(session, media_id)
    path = stored_path(media_dir, media)
    await session.delete(media)
    await session.flush()
    remove_on_commit(session, path)
    record(
        session,
        actor,
        "media.deleted",
        "media",
        media.id,
        name=media.original_name,
        stored_name=media.stored_name,
    )
    return media


async def list_media(
    session: AsyncSession, q: str | None, kind: str | None, page: PageRequest
) -> Page[ListedMedia]:
    """Media, newest first, whose name or alt text contains `q`; only images or PDFs
    when `kind` says so."""
    conditions: list[Any] = []
    text = " ".join((q or "").split()).lower()[:200]
    if text:
        conditions.append(
            or_(
                func.lower(Media.original_name).contains(text, autoescape=True),
                func.lower(Media.alt_text).contains(text, autoescape=True),
            )
        )
    if kind == "image":
        conditions.append(Media.content_type.startswith("image/"))
    elif kind == "pdf":
        conditions.append(Media.content_type == PDF.content_type)
    elif kind:
        raise InvalidMedia("Choose images or PDFs.", "kind")
    statement = (
        select(Media, User.username)
        .outerjoin(User, User.id == Media.uploaded_by_id)
        .where(*conditions)
        .order_by(Media.created_at.desc(), Media.id)
    )
    found = await paginate(session, statement, page, rows=True)
    return found.map(lambda row: ListedMedia(row[0], row[1]))
