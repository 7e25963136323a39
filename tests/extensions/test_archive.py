"""app/extensions/services/archive.py: hostile uploads refused before anything is written,
good ones unpacked atomically."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from app.core.errors import Conflict, InvalidField
from app.extensions.services.archive import (
    ArchiveRefused,
    PluginFolderExists,
    extract,
    pack_folder,
    read_upload,
    unpack_archive,
    uploaded_checksum,
)
from app.extensions.services.signing import checksum, generate_keypair, verify, write_signature
from app.settings import PluginSettings

MANIFEST = """[plugin]
name = "guestbook"
version = "1.0.0"
keel = ">=0.1"
entry_point = "guestbook.plugin:GuestbookPlugin"
"""
LIMITS = PluginSettings(upload_max_bytes=100_000, upload_max_files=20)
Entry = tuple[str, bytes] | zipfile.ZipInfo | tuple[zipfile.ZipInfo, bytes]


def _zip(*entries: Entry, manifest: bool = True) -> bytes:
    """A zip of `entries` (names or ZipInfos with their bytes), after guestbook/plugin.toml."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if manifest:
            archive.writestr("guestbook/plugin.toml", MANIFEST)
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                archive.writestr(entry, b"")
            else:
                archive.writestr(entry[0], entry[1])
    return buffer.getvalue()


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def _refused(data: bytes, match: str, limits: PluginSettings = LIMITS) -> ArchiveRefused:
    with pytest.raises(ArchiveRefused, match=match) as caught:
        read_upload(data, limits)
    assert caught.value.field == "file"
    return caught.value


def _plugin_folder(root: Path) -> Path:
    folder = root / "guestbook"
    (folder / "guestbook").mkdir(parents=True)
    (folder / "plugin.toml").write_text(MANIFEST)
    (folder / "guestbook" / "__init__.py").write_text("")
    (folder / "guestbook" / "plugin.py").write_text("class GuestbookPlugin: ...\n")
    (folder / "templates" / "guestbook").mkdir(parents=True)
    (folder / "templates" / "guestbook" / "index.html").write_text("<h1>Guestbook</h1>\n")
    return folder


def test_a_good_archive_gives_its_manifest_and_members() -> None:
    data = _zip(("guestbook/guestbook/plugin.py", b"x = 1\n"), _info("guestbook/static/", 0o40755))
    uploaded = read_upload(data, LIMITS)
    assert uploaded.manifest.name == "guestbook"
    assert uploaded.manifest.path == Path("guestbook")
    assert [str(m.path) for m in uploaded.members] == [
        "plugin.toml",
        "guestbook/plugin.py",
        "static",
    ]
    assert uploaded.signature is None
    assert uploaded.size == len(MANIFEST) + 6


def test_an_archive_over_the_size_limit_is_413() -> None:
    refused = _refused(
        _zip(("guestbook/big.bin", b"x" * 200)),
        "PLUGIN_UPLOAD_MAX_BYTES",
        PluginSettings(upload_max_bytes=100),
    )
    assert refused.status == 413


@pytest.mark.parametrize("data", [b"", b"plain text, not a zip", b"PK\x03\x04broken"])
def test_a_file_that_is_not_a_zip_is_refused(data: bytes) -> None:
    assert _refused(data, "not a zip archive").status == 422


def test_too_many_entries_are_refused() -> None:
    entries = [(f"guestbook/f{i}.txt", b"") for i in range(20)]
    _refused(_zip(*entries), "21 entries; the limit is 20")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("/etc/guestbook/evil.py", "absolute path"),
        ("C:/guestbook/evil.py", "absolute path"),
        ("guestbook/../../evil.py", r"'\.\.' path component"),
        ("guestbook/./evil.py", r"'\.' or '\.\.' path component"),
        ("guestbook//evil.py", "empty"),
        ("guestbook\\..\\evil.py", "backslashes"),
        ("guestbook/evil\x07.py", "control characters"),
    ],
)
def test_names_that_could_escape_the_folder_are_refused(name: str, match: str) -> None:
    _refused(_zip((name, b"x")), match)


def test_a_symbolic_link_is_refused() -> None:
    link = _info("guestbook/passwd", stat.S_IFLNK | 0o777)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("guestbook/plugin.toml", MANIFEST)
        archive.writestr(link, "/etc/passwd")
    _refused(buffer.getvalue(), "symbolic link")


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_devices_pipes_and_sockets_are_refused(kind: int) -> None:
    _refused(_zip(_info("guestbook/dev", kind | 0o644)), "device, pipe or socket")


def test_duplicate_names_are_refused() -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = _zip(("guestbook/a.py", b"1"), ("guestbook/a.py", b"2"))
    _refused(data, "more than once")


def test_names_differing_only_in_case_are_refused() -> None:
    _refused(_zip(("guestbook/A.py", b"1"), ("guestbook/a.py", b"2")), "more than once")


def test_a_path_that_is_a_file_and_a_folder_is_refused() -> None:
    _refused(_zip(("guestbook/x", b"1"), ("guestbook/x/y", b"2")), "as a file and a folder")


def test_a_zip_bomb_is_refused_before_unpacking() -> None:
    bomb = ("guestbook/zeros.bin", b"\0" * 1_000_001)
    data = _zip(bomb)
    assert len(data) < LIMITS.upload_max_bytes
    _refused(data, "more than 10 times the upload limit")


def test_a_damaged_entry_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    data = bytearray(_zip(("guestbook/data.txt", b"a" * 100), manifest=True))
    uploaded = read_upload(bytes(data), LIMITS)
    member = next(m for m in uploaded.members if m.entry == "guestbook/data.txt")
    # Corrupt the stored content: the CRC no longer matches.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        offset = archive.getinfo("guestbook/data.txt").header_offset
    data[offset + 30 + len(member.entry) + 1] ^= 0xFF
    with pytest.raises(ArchiveRefused, match="cannot be read"):
        extract(read_upload(bytes(data), LIMITS), bytes(data), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_files_at_the_top_level_are_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("plugin.toml", MANIFEST)
        archive.writestr("guestbook/plugin.py", "")
    _refused(buffer.getvalue(), "files at its top level")


def test_more_than_one_top_folder_is_refused() -> None:
    _refused(_zip(("other/plugin.py", b"")), "one folder named as the plugin")


def test_an_archive_with_only_litter_is_refused() -> None:
    _refused(_zip(("__MACOSX/._x", b""), manifest=False), "it holds: nothing")


def test_a_top_folder_not_named_as_the_plugin_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("guestbook-1.0/plugin.toml", MANIFEST)
    _refused(buffer.getvalue(), "must match its folder 'guestbook-1.0'")


def test_a_missing_manifest_is_refused() -> None:
    _refused(_zip(("guestbook/plugin.py", b""), manifest=False), "no guestbook/plugin.toml")


def test_an_invalid_manifest_is_refused_with_its_problems() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("guestbook/plugin.toml", MANIFEST.replace('"1.0.0"', '"one"'))
    refused = _refused(buffer.getvalue(), "plugin.toml: plugin.version must be a semantic")
    assert isinstance(refused, InvalidField)


def test_an_encrypted_entry_is_refused() -> None:
    data = bytearray(_zip(("guestbook/secret.py", b"x")))
    central = data.rindex(b"PK\x01\x02")  # the last entry's central directory record
    data[central + 8] |= 0x1  # its general purpose flags: encrypted
    _refused(bytes(data), "encrypted")


def test_litter_and_compiled_files_are_skipped_not_written(tmp_path: Path) -> None:
    data = _zip(
        ("__MACOSX/guestbook/._plugin.toml", b""),
        ("guestbook/.DS_Store", b""),
        ("guestbook/guestbook/__pycache__/plugin.cpython-311.pyc", b"\0"),
        ("guestbook/guestbook/plugin.pyc", b"\0"),
        ("guestbook/guestbook/plugin.py", b""),
    )
    uploaded = read_upload(data, LIMITS)
    assert [str(m.path) for m in uploaded.members] == ["plugin.toml", "guestbook/plugin.py"]
    folder = extract(uploaded, data, tmp_path)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "guestbook",
        "guestbook/plugin.py",
        "plugin.toml",
    ]


def test_extract_writes_the_files_with_fixed_modes(tmp_path: Path) -> None:
    executable = _info("guestbook/run.sh", stat.S_IFREG | 0o4777)
    data = _zip((executable, b"#!/bin/sh\n"), ("guestbook/guestbook/plugin.py", b"x = 1\n"))
    folder = extract(read_upload(data, LIMITS), data, tmp_path / "plugins")
    assert folder == tmp_path / "plugins" / "guestbook"
    assert (folder / "guestbook" / "plugin.py").read_bytes() == b"x = 1\n"
    assert (folder / "plugin.toml").read_text() == MANIFEST
    assert stat.S_IMODE((folder / "run.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "guestbook").stat().st_mode) == 0o755
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert [p.name for p in (tmp_path / "plugins").iterdir()] == ["guestbook"]


def test_extract_does_not_replace_a_folder_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "old.py").write_text("")
    data = _zip(("guestbook/new.py", b""))
    uploaded = read_upload(data, LIMITS)
    with pytest.raises(PluginFolderExists) as caught:
        extract(uploaded, data, tmp_path)
    assert isinstance(caught.value, Conflict)
    assert (tmp_path / "guestbook" / "old.py").exists()
    folder = extract(uploaded, data, tmp_path, replace=True)
    assert sorted(p.name for p in folder.iterdir()) == ["new.py", "plugin.toml"]
    assert [p.name for p in tmp_path.iterdir()] == ["guestbook"]


def test_extract_replaces_a_link_without_following_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "guestbook").symlink_to(elsewhere)
    data = _zip()
    extract(read_upload(data, LIMITS), data, plugins, replace=True)
    assert not (plugins / "guestbook").is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "keep"


def test_a_failed_extract_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "old.py").write_text("old")
    data = _zip(("guestbook/new.py", b"new"))
    uploaded = read_upload(data, LIMITS)
    with pytest.raises(ArchiveRefused):
        extract(uploaded, b"garbage", tmp_path, replace=True)
    assert [p.name for p in tmp_path.iterdir()] == ["guestbook"]
    assert (tmp_path / "guestbook" / "old.py").read_text() == "old"


def test_pack_folder_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    folder = _plugin_folder(tmp_path / "src")
    (folder / "guestbook" / "__pycache__").mkdir()
    (folder / "guestbook" / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"\0")
    data = pack_folder(folder)
    assert pack_folder(folder) == data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == [
            "guestbook/guestbook/__init__.py",
            "guestbook/guestbook/plugin.py",
            "guestbook/plugin.toml",
            "guestbook/templates/guestbook/index.html",
        ]
    unpacked = extract(read_upload(data, LIMITS), data, tmp_path / "plugins")
    assert checksum(unpacked) == checksum(folder)


def test_pack_folder_refuses_links(tmp_path: Path) -> None:
    folder = _plugin_folder(tmp_path)
    (folder / "secrets").symlink_to("/etc")
    with pytest.raises(ArchiveRefused, match="is a link"):
        pack_folder(folder)


def test_a_signed_archive_can_be_verified_before_it_is_written(tmp_path: Path) -> None:
    private, public = generate_keypair()
    folder = _plugin_folder(tmp_path / "src")
    write_signature(folder, private)
    data = pack_folder(folder)
    uploaded = read_upload(data, LIMITS)
    assert uploaded.signature is not None
    digest = uploaded_checksum(uploaded, data)
    assert digest == checksum(folder)
    assert verify(digest, uploaded.signature, [public])


def test_a_garbled_signature_file_in_an_archive_is_refused() -> None:
    _refused(_zip(("guestbook/plugin.sig", b"\xff\xfe")), "base64 text")


def test_unpack_archive_checks_then_replaces(tmp_path: Path) -> None:
    data = pack_folder(_plugin_folder(tmp_path / "src"))
    (tmp_path / "plugins" / "guestbook").mkdir(parents=True)
    (tmp_path / "plugins" / "guestbook" / "stale.py").write_text("")
    manifest = unpack_archive(data, tmp_path / "plugins", LIMITS)
    assert manifest.path == tmp_path / "plugins" / "guestbook"
    assert not (manifest.path / "stale.py").exists()
    assert (manifest.path / "guestbook" / "plugin.py").exists()
    with pytest.raises(ArchiveRefused, match="symbolic link"):
        unpack_archive(_zip(_info("guestbook/x", stat.S_IFLNK | 0o777)), tmp_path / "p", LIMITS)
    assert not (tmp_path / "p").exists()
