"""Plugin archives: an uploaded `.zip` checked entry by entry before anything is written,
then unpacked beside its target folder and renamed into place.

The layout is one top folder named as the plugin, holding the plugin folder as it is on
disk: `guestbook/plugin.toml`, `guestbook/guestbook/plugin.py`, ... (`pack_folder` and
`keel plugins new` make that form). Files at the top level of the zip are refused.
`__MACOSX/`, `__pycache__/`, `*.pyc` and `.DS_Store` entries are skipped, never written
(a compiled file would run code the checksum does not cover)."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from app.core.errors import Conflict, InvalidField
from app.extensions.services.manifest import ManifestError, PluginManifest, parse_manifest
from app.extensions.services.signing import (
    SIGNATURE_FILE,
    ChecksumBuilder,
    SigningError,
    is_excluded,
    signature_from_file,
)
from app.settings import PluginSettings

EXPANSION_LIMIT = 10
"""An archive may unpack to at most this many times PLUGIN_UPLOAD_MAX_BYTES (zip bombs)."""
MANIFEST_MAX_BYTES = 64 * 1024
_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 64 * 1024
FILE_MODE, FOLDER_MODE = 0o644, 0o755
"""Modes of what is unpacked, whatever the archive says: readable by the server's other
users (Keel may run as another user than the one that deploys), writable by the owner."""


class ArchiveRefused(InvalidField):
    """An uploaded plugin archive Keel will not unpack; the message says why."""

    def __init__(self, message: str, *, status: Literal[413, 422] = 422) -> None:
        super().__init__(message, "file", status=status)


class PluginFolderExists(Conflict):
    """A plugin folder of that name is already there (and replacing it was not asked)."""


@dataclass(frozen=True)
class ArchiveMember:
    """One entry of a checked archive: its name in the zip and its path inside the plugin
    folder."""

    entry: str
    path: PurePosixPath
    is_dir: bool
    size: int


@dataclass(frozen=True)
class UploadedPlugin:
    """An archive that passed every check: its manifest (with `path` the plugin's folder
    name, relative, until it is extracted), the members to write, and the signature its
    `plugin.sig` holds."""

    manifest: PluginManifest
    members: tuple[ArchiveMember, ...]
    signature: str | None

    @property
    def size(self) -> int:
        """Bytes the plugin takes once unpacked."""
        return sum(member.size for member in self.members)


def read_upload(data: bytes, limits: PluginSettings) -> UploadedPlugin:
    """Check an uploaded plugin zip and read its manifest, writing nothing; raises
    ArchiveRefused with the reason (413 for an archive over PLUGIN_UPLOAD_MAX_BYTES)."""
    if len(data) > limits.upload_max_bytes:
        raise ArchiveRefused(
            f"The archive is {len(data)} bytes; the limit is {limits.upload_max_bytes} "
            "(PLUGIN_UPLOAD_MAX_BYTES).",
            status=413,
        )
    with _open_zip(data) as archive:
        infos = archive.infolist()
        if len(infos) > limits.upload_max_files:
            raise ArchiveRefused(
                f"The archive has {len(infos)} entries; the limit is {limits.upload_max_files} "
                "(PLUGIN_UPLOAD_MAX_FILES)."
            )
        for info in infos:
            _check_entry(info)
        kept = [info for info in infos if not _skipped(info.filename)]
        top = _top_folder(kept)
        members = _members(kept, top)
        unpacked = sum(member.size for member in members)
        if unpacked > EXPANSION_LIMIT * limits.upload_max_bytes:
            raise ArchiveRefused(
                f"The archive unpacks to {unpacked} bytes, more than {EXPANSION_LIMIT} times "
                "the upload limit."
            )
        manifest = _manifest(archive, top)
        signature = _signature(archive, top)
    return UploadedPlugin(manifest, tuple(members), signature)


def uploaded_checksum(uploaded: UploadedPlugin, data: bytes) -> str:
    """The checksum (signing.checksum) the plugin's folder will have once extracted, from
    the archive itself: a signature can be checked before anything is written."""
    builder = ChecksumBuilder()
    with _open_zip(data) as archive:
        files = sorted(
            (str(member.path), member) for member in uploaded.members if not member.is_dir
        )
        for relative, member in files:
            if relative != SIGNATURE_FILE:
                builder.add(relative, member.size, _read_chunks(archive, member))
    return builder.hexdigest()


def extract(
    uploaded: UploadedPlugin, data: bytes, plugins_dir: Path, *, replace: bool = False
) -> Path:
    """Write a checked archive to `plugins_dir/<name>`: unpacked into a temporary folder
    beside it, then renamed into place (an existing folder of that name is replaced only
    with `replace`, else PluginFolderExists). Files get mode 0644, folders 0755; links are
    never followed or made. Returns the plugin's folder."""
    name = uploaded.manifest.name
    target = plugins_dir / name
    if not replace and (target.exists() or target.is_symlink()):
        raise PluginFolderExists(f"A plugin folder {name!r} already exists.", "file")
    plugins_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=plugins_dir))
    try:
        with _open_zip(data) as archive:
            for member in uploaded.members:
                _write_member(archive, member, staging)
        os.chmod(staging, FOLDER_MODE)
        _move_into_place(staging, target, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def unpack_archive(
    data: bytes, plugins_dir: Path, limits: PluginSettings, *, replace: bool = True
) -> PluginManifest:
    """An archive kept in the database, unpacked on this machine (another replica uploaded
    it): checked like an upload, it is still untrusted input, then extracted (replacing
    the folder there by default). Returns the manifest, its `path` the plugin's folder."""
    uploaded = read_upload(data, limits)
    folder = extract(uploaded, data, plugins_dir, replace=replace)
    return _with_path(uploaded.manifest, folder)


def pack_folder(folder: Path) -> bytes:
    """A plugin folder as an archive in the layout `read_upload` takes (`<name>/...`),
    the same bytes for the same files. Links are refused; `__pycache__/`, `*.pyc` and
    `.DS_Store` are left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, path in sorted(_folder_files(folder)):
            info = zipfile.ZipInfo(f"{folder.name}/{relative}", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _folder_files(folder: Path) -> Iterator[tuple[str, Path]]:
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in [*dirs, *files]:
            if (base / name).is_symlink():
                link = (base / name).relative_to(folder).as_posix()
                raise ArchiveRefused(f"{link} is a link; a plugin archive holds no links.")
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            path = base / name
            relative = PurePosixPath(path.relative_to(folder).as_posix())
            if not is_excluded(relative) and path.is_file():
                yield str(relative), path


def _open_zip(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
        raise ArchiveRefused("The file is not a zip archive.") from None


def _check_entry(info: zipfile.ZipInfo) -> None:
    """Refuse an entry whose name or kind could write outside its folder or make anything
    but a plain file or folder."""
    name = info.orig_filename
    shown = name.encode("unicode_escape").decode("ascii")[:200]
    if not name or _CONTROL.search(name):
        raise ArchiveRefused(f"The entry {shown!r} has an empty name or control characters.")
    if "\\" in name:
        raise ArchiveRefused(f"The entry {shown!r} uses backslashes; use / between folders.")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveRefused(f"The entry {shown!r} is an absolute path.")
    parts = (name[:-1] if name.endswith("/") else name).split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ArchiveRefused(f"The entry {shown!r} has an empty, '.' or '..' path component.")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if stat.S_ISLNK(kind):
        raise ArchiveRefused(f"The entry {shown!r} is a symbolic link; links are not allowed.")
    if kind and not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
        raise ArchiveRefused(
            f"The entry {shown!r} is a device, pipe or socket; only files and folders are allowed."
        )
    if stat.S_ISDIR(kind) and not info.is_dir():
        raise ArchiveRefused(f"The entry {shown!r} is a folder whose name does not end in /.")
    if info.flag_bits & 0x1:
        raise ArchiveRefused(f"The entry {shown!r} is encrypted.")
    if info.compress_type not in _COMPRESSIONS:
        raise ArchiveRefused(f"The entry {shown!r} uses an unsupported compression method.")


def _skipped(name: str) -> bool:
    path = PurePosixPath(name)
    return path.parts[0] == "__MACOSX" or is_excluded(path)


def _top_folder(infos: list[zipfile.ZipInfo]) -> str:
    tops = {info.filename.split("/")[0] for info in infos}
    loose = [info.filename for info in infos if "/" not in info.filename]
    if loose:
        raise ArchiveRefused(
            f"The archive has files at its top level ({loose[0]!r}); put the plugin's files "
            "in one folder named as the plugin: <name>/plugin.toml, ..."
        )
    if len(tops) != 1:
        found = ", ".join(sorted(tops)[:5]) or "nothing"
        raise ArchiveRefused(
            f"The archive must hold one folder named as the plugin; it holds: {found}."
        )
    return tops.pop()


def _members(infos: list[zipfile.ZipInfo], top: str) -> list[ArchiveMember]:
    members: list[ArchiveMember] = []
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    seen: set[str] = set()
    for info in infos:
        relative = PurePosixPath(*info.filename.rstrip("/").split("/")[1:])
        key = str(relative).casefold()
        if key in seen:
            raise ArchiveRefused(
                f"The archive holds {info.filename!r} more than once (names that differ "
                "only in upper and lower case count as the same)."
            )
        seen.add(key)
        if relative == PurePosixPath():
            continue  # the top folder's own entry
        if info.is_dir():
            dirs.add(relative)
        else:
            files.add(relative)
        dirs.update(parent for parent in relative.parents if parent != PurePosixPath())
        members.append(ArchiveMember(info.filename, relative, info.is_dir(), info.file_size))
    clash = files & dirs
    if clash:
        raise ArchiveRefused(
            f"The archive holds {sorted(map(str, clash))[0]!r} as a file and a folder."
        )
    return members


def _manifest(archive: zipfile.ZipFile, top: str) -> PluginManifest:
    try:
        info = archive.getinfo(f"{top}/plugin.toml")
    except KeyError:
        raise ArchiveRefused(f"The archive has no {top}/plugin.toml.") from None
    if info.file_size > MANIFEST_MAX_BYTES:
        raise ArchiveRefused(f"{top}/plugin.toml is larger than {MANIFEST_MAX_BYTES} bytes.")
    try:
        text = _read(archive, info).decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveRefused("plugin.toml must be UTF-8 text.") from None
    try:
        return parse_manifest(text, Path(top))
    except ManifestError as exc:
        raise ArchiveRefused(f"plugin.toml: {exc.message}") from exc


def _signature(archive: zipfile.ZipFile, top: str) -> str | None:
    try:
        info = archive.getinfo(f"{top}/{SIGNATURE_FILE}")
    except KeyError:
        return None
    try:
        return signature_from_file(_read(archive, info, limit=1025))
    except SigningError as exc:
        raise ArchiveRefused(exc.message) from exc


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int | None = None) -> bytes:
    try:
        with archive.open(info) as entry:
            return entry.read(limit if limit is not None else info.file_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError):
        raise ArchiveRefused(f"The entry {info.filename!r} cannot be read (damaged).") from None


def _read_chunks(archive: zipfile.ZipFile, member: ArchiveMember) -> Iterator[bytes]:
    """An entry's bytes; never more than the size its header gives (zipfile stops there and
    checks the CRC), and a damaged entry is refused."""
    try:
        with archive.open(member.entry) as entry:
            while chunk := entry.read(_CHUNK):
                yield chunk
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError):
        raise ArchiveRefused(f"The entry {member.entry!r} cannot be read (damaged).") from None


def _write_member(archive: zipfile.ZipFile, member: ArchiveMember, staging: Path) -> None:
    path = staging.joinpath(*member.path.parts)
    folders = [*reversed(member.path.parents), *([member.path] if member.is_dir else [])]
    for folder in (staging.joinpath(*parent.parts) for parent in folders):
        if not folder.is_dir():
            folder.mkdir(mode=FOLDER_MODE)
            os.chmod(folder, FOLDER_MODE)
    if member.is_dir:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, FILE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        written = 0
        for chunk in _read_chunks(archive, member):
            written += len(chunk)
            if written > member.size:
                raise ArchiveRefused(f"The entry {member.entry!r} is larger than it says.")
            file.write(chunk)
        os.fchmod(file.fileno(), FILE_MODE)
    if written != member.size:
        raise ArchiveRefused(f"The entry {member.entry!r} is shorter than it says.")


def _move_into_place(staging: Path, target: Path, replace: bool) -> None:
    """Rename the unpacked folder to `target`. Replacing moves the old folder aside first
    (there is no atomic exchange of two folders in the standard library), then removes it;
    a failed rename puts it back."""
    if not (replace and (target.exists() or target.is_symlink())):
        os.rename(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    aside = retired / "previous"
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        shutil.rmtree(retired, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _with_path(manifest: PluginManifest, folder: Path) -> PluginManifest:
    return dataclasses.replace(manifest, path=folder)
