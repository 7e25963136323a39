"""What a plugin's files are, as one SHA-256 checksum, and Ed25519 signatures over it.

The checksum covers every file of the plugin folder, in order of its relative POSIX path:
for each, the path, NUL, the size in decimal, NUL, then the content. `__pycache__/`, `*.pyc`,
`.DS_Store` and the signature file itself (`plugin.sig` at the top) are left out. A
signature is Ed25519 over the checksum's 64 hex characters; keys and signatures travel as
base64 of their raw bytes (32 bytes for a key, 64 for a signature)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.core.errors import InvalidField

SIGNATURE_FILE = "plugin.sig"
_CHUNK = 64 * 1024
_MAX_SIGNATURE_FILE = 1024


class SigningError(InvalidField):
    """A key or signature that is not what it should be (not base64, wrong length)."""


def is_excluded(relative: PurePosixPath) -> bool:
    """Whether a file of a plugin folder is left out of its checksum and its archive
    (compiled Python, Finder's litter; the signature file is left out of the checksum only)."""
    return (
        "__pycache__" in relative.parts or relative.suffix == ".pyc" or relative.name == ".DS_Store"
    )


class ChecksumBuilder:
    """A plugin checksum built file by file, in order of relative path (for files that are
    not on disk yet: the members of an uploaded archive)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last: str | None = None

    def add(self, relative: str, size: int, chunks: Iterable[bytes]) -> None:
        if self._last is not None and relative <= self._last:
            raise ValueError(f"files must be added in order of their path: {relative!r}")
        self._last = relative
        self._hash.update(os.fsencode(relative) + b"\0" + str(size).encode() + b"\0")
        written = 0
        for chunk in chunks:
            written += len(chunk)
            self._hash.update(chunk)
        if written != size:
            raise ValueError(f"{relative!r} has {written} bytes, not the {size} announced")

    def add_link(self, relative: str, target: str) -> None:
        """A symbolic link (only ever on disk: an archive may not hold one), by its target."""
        self.add(relative, 0, [])
        self._hash.update(b"\0link\0" + os.fsencode(target))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def checksum(folder: Path) -> str:
    """SHA-256 (hex) over the plugin's files; the same files give the same checksum on every
    machine, and any changed byte, renamed, added or removed file gives another. Links are
    not followed: a link counts as its target's path."""
    builder = ChecksumBuilder()
    for relative, path in sorted(_plugin_files(folder)):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            builder.add_link(relative, os.readlink(path))
        elif stat.S_ISREG(mode):
            builder.add(relative, path.lstat().st_size, _chunks(path))
    return builder.hexdigest()


def _plugin_files(folder: Path) -> Iterator[tuple[str, Path]]:
    for root, dirs, files in os.walk(folder):  # never descends into linked folders
        base = Path(root)
        linked = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d != "__pycache__" and d not in linked]
        for name in [*files, *linked]:
            path = base / name
            relative = PurePosixPath(path.relative_to(folder).as_posix())
            if is_excluded(relative) or str(relative) == SIGNATURE_FILE:
                continue
            yield str(relative), path


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def generate_keypair() -> tuple[str, str]:
    """A new Ed25519 key pair as (private, public), base64: the private key signs plugins,
    the public one goes into PLUGIN_TRUSTED_KEYS."""
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return _b64(raw_private), _b64(raw_public)


def public_key_of(private_key_b64: str) -> str:
    """The public key (base64) that goes with a private key."""
    public = _private_key(private_key_b64).public_key()
    return _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign(checksum: str, private_key_b64: str) -> str:
    """The signature (base64) of a plugin checksum by the author's private key."""
    signature = _private_key(private_key_b64).sign(_message(checksum))
    return _b64(signature)


def verify(checksum: str, signature_b64: str, trusted_keys: Sequence[str]) -> bool:
    """Whether `signature_b64` signs `checksum` by one of `trusted_keys` (PLUGIN_TRUSTED_KEYS).
    A malformed signature or key raises SigningError; a well-formed one that does not match
    any trusted key is False."""
    signature = _decode(signature_b64, 64, "signature", "an Ed25519 signature")
    message = _message(checksum)
    for key in trusted_keys:
        public = Ed25519PublicKey.from_public_bytes(
            _decode(key, 32, "trusted_keys", "an Ed25519 public key")
        )
        try:
            public.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def public_key_problem(key_b64: str) -> str | None:
    """Why a configured trusted key is not an Ed25519 public key, or None (for start-up
    checks of PLUGIN_TRUSTED_KEYS)."""
    try:
        _decode(key_b64, 32, "trusted_keys", "an Ed25519 public key")
    except SigningError as exc:
        return exc.message
    return None


def read_signature(folder: Path) -> str | None:
    """The signature in the plugin's `plugin.sig` (base64 text), or None without one."""
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return None
    data = path.read_bytes()[: _MAX_SIGNATURE_FILE + 1]
    return signature_from_file(data)


def signature_from_file(data: bytes) -> str | None:
    """The signature a `plugin.sig` holds (on disk or in an archive)."""
    if len(data) > _MAX_SIGNATURE_FILE:
        raise SigningError(f"{SIGNATURE_FILE} is too long for a signature", "signature")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SigningError(f"{SIGNATURE_FILE} must hold base64 text", "signature") from None
    return text or None


def write_signature(folder: Path, private_key_b64: str) -> str:
    """Sign the plugin in `folder`: its checksum's signature goes into `plugin.sig`."""
    signature = sign(checksum(folder), private_key_b64)
    (folder / SIGNATURE_FILE).write_text(signature + "\n", encoding="ascii")
    return signature


def _private_key(private_key_b64: str) -> Ed25519PrivateKey:
    raw = _decode(private_key_b64, 32, "private_key", "an Ed25519 private key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _decode(value: str, length: int, field: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise SigningError(f"not {what}: not base64", field) from None
    if len(raw) != length:
        raise SigningError(f"not {what}: {len(raw)} bytes, expected {length}", field)
    return raw


def _message(checksum: str) -> bytes:
    if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
        raise SigningError("a plugin checksum is 64 lowercase hex characters", "checksum")
    return checksum.encode("ascii")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
