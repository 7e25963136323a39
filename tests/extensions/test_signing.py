"""app/extensions/services/signing.py: plugin checksums and Ed25519 signatures."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from app.core.errors import InvalidField
from app.extensions.services.signing import (
    SigningError,
    checksum,
    generate_keypair,
    public_key_of,
    public_key_problem,
    read_signature,
    sign,
    verify,
    write_signature,
)

FILES = {
    "plugin.toml": b'[plugin]\nname = "guestbook"\n',
    "guestbook/__init__.py": b"",
    "guestbook/plugin.py": b"class GuestbookPlugin: ...\n",
    "templates/guestbook/index.html": b"<h1>Guestbook</h1>\n",
}


def _plugin(root: Path, files: dict[str, bytes] = FILES, order: list[str] | None = None) -> Path:
    folder = root / "guestbook"
    for name in order or list(files):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(files[name])
    return folder


def test_the_checksum_follows_the_documented_format(tmp_path: Path) -> None:
    expected = hashlib.sha256()
    for name in sorted(FILES):
        expected.update(name.encode() + b"\0" + str(len(FILES[name])).encode() + b"\0")
        expected.update(FILES[name])
    assert checksum(_plugin(tmp_path)) == expected.hexdigest()


def test_the_checksum_does_not_depend_on_the_order_files_were_written(tmp_path: Path) -> None:
    first = _plugin(tmp_path / "a")
    second = _plugin(tmp_path / "b", order=sorted(FILES, reverse=True))
    assert checksum(first) == checksum(second)


def test_any_changed_byte_changes_the_checksum(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    before = checksum(folder)
    (folder / "guestbook/plugin.py").write_bytes(b"class GuestbookPlugin: ..,\n")
    assert checksum(folder) != before


def test_a_renamed_added_or_removed_file_changes_the_checksum(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    before = checksum(folder)
    (folder / "templates/guestbook/index.html").rename(folder / "templates/guestbook/main.html")
    renamed = checksum(folder)
    (folder / "guestbook/extra.py").write_bytes(b"")
    added = checksum(folder)
    (folder / "guestbook/__init__.py").unlink()
    removed = checksum(folder)
    assert len({before, renamed, added, removed}) == 4


def test_moving_bytes_between_files_changes_the_checksum(tmp_path: Path) -> None:
    one = _plugin(tmp_path / "a", {"a": b"xy", "b": b""})
    two = _plugin(tmp_path / "b", {"a": b"x", "b": b"y"})
    assert checksum(one) != checksum(two)


def test_compiled_files_litter_and_the_signature_are_left_out(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    before = checksum(folder)
    (folder / "guestbook/__pycache__").mkdir()
    (folder / "guestbook/__pycache__/plugin.cpython-311.pyc").write_bytes(b"\0")
    (folder / "guestbook/stray.pyc").write_bytes(b"\0")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "plugin.sig").write_text("c2lnbmF0dXJl\n")
    assert checksum(folder) == before
    (folder / "templates/plugin.sig").write_text("only the top one is the signature")
    assert checksum(folder) != before


def test_links_are_counted_not_followed(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "code.py").write_text("print('hi')")
    before = checksum(folder)
    os.symlink(outside, folder / "linked")
    with_link = checksum(folder)
    (outside / "code.py").write_text("print('changed')")
    assert with_link != before
    assert checksum(folder) == with_link


def test_a_signature_by_a_trusted_key_verifies(tmp_path: Path) -> None:
    private, public = generate_keypair()
    digest = checksum(_plugin(tmp_path))
    signature = sign(digest, private)
    assert public_key_of(private) == public
    assert verify(digest, signature, [public])
    _, other_public = generate_keypair()
    assert verify(digest, signature, [other_public, public])


def test_a_signature_over_other_files_does_not_verify(tmp_path: Path) -> None:
    private, public = generate_keypair()
    folder = _plugin(tmp_path)
    signature = sign(checksum(folder), private)
    (folder / "plugin.toml").write_bytes(b"# changed\n")
    assert not verify(checksum(folder), signature, [public])


def test_a_signature_by_an_untrusted_key_does_not_verify(tmp_path: Path) -> None:
    private, _ = generate_keypair()
    _, trusted = generate_keypair()
    digest = checksum(_plugin(tmp_path))
    assert not verify(digest, sign(digest, private), [trusted])
    assert not verify(digest, sign(digest, private), [])


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "c2hvcnQ=", "A" * 89],
)
def test_a_garbled_signature_is_an_invalid_field(signature: str) -> None:
    _, public = generate_keypair()
    with pytest.raises(SigningError, match="not an Ed25519 signature") as caught:
        verify("0" * 64, signature, [public])
    assert isinstance(caught.value, InvalidField)
    assert caught.value.field == "signature"


def test_a_malformed_key_is_an_invalid_field_not_a_crash() -> None:
    private, _ = generate_keypair()
    signature = sign("0" * 64, private)
    with pytest.raises(SigningError, match="not an Ed25519 public key"):
        verify("0" * 64, signature, ["bm90IGEga2V5"])
    with pytest.raises(SigningError, match="not an Ed25519 private key"):
        sign("0" * 64, "%%%")
    with pytest.raises(SigningError, match="checksum"):
        sign("not a checksum", private)
    assert public_key_problem("bm90IGEga2V5") is not None
    assert public_key_problem(generate_keypair()[1]) is None


def test_the_signature_file_is_read_and_written(tmp_path: Path) -> None:
    private, public = generate_keypair()
    folder = _plugin(tmp_path)
    assert read_signature(folder) is None
    signature = write_signature(folder, private)
    assert read_signature(folder) == signature
    assert verify(checksum(folder), signature, [public])
    (folder / "plugin.sig").write_text("\n")
    assert read_signature(folder) is None


def test_a_signature_file_that_is_not_text_is_an_invalid_field(tmp_path: Path) -> None:
    folder = _plugin(tmp_path)
    (folder / "plugin.sig").write_bytes(b"\xff\xfe")
    with pytest.raises(SigningError, match="base64 text"):
        read_signature(folder)
    (folder / "plugin.sig").write_bytes(b"A" * 5000)
    with pytest.raises(SigningError, match="too long"):
        read_signature(folder)


def test_a_copied_folder_keeps_its_checksum_and_signature(tmp_path: Path) -> None:
    private, public = generate_keypair()
    folder = _plugin(tmp_path / "a")
    signature = write_signature(folder, private)
    copy = shutil.copytree(folder, tmp_path / "b" / "guestbook")
    assert checksum(copy) == checksum(folder)
    assert verify(checksum(copy), signature, [public])
