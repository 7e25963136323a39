"""Plugin manifests: `plugins/<name>/plugin.toml`, read and validated."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


@dataclass(frozen=True)
class PluginManifest:
    name: str
    version: str
    description: str
    path: Path


@dataclass(frozen=True)
class ManifestProblem:
    path: Path
    message: str


def read_manifest(path: Path) -> PluginManifest:
    """Parse one plugin.toml; raises ValueError with a message a plugin author can act on."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    plugin = data.get("plugin")
    if not isinstance(plugin, dict):
        raise ValueError("needs a [plugin] table")
    name, version = plugin.get("name"), plugin.get("version")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError("plugin.name must be 2-40 characters: a-z, 0-9, _ and start with a letter")
    if name != path.parent.name:
        raise ValueError(f"plugin.name {name!r} must match its folder {path.parent.name!r}")
    if not isinstance(version, str) or not version:
        raise ValueError("plugin.version must be a non-empty string")
    description = plugin.get("description", "")
    return PluginManifest(name, version, str(description), path.parent)


def discover_plugins(directory: Path) -> tuple[list[PluginManifest], list[ManifestProblem]]:
    """Every plugin folder under `directory`, and the manifests that could not be read."""
    manifests: list[PluginManifest] = []
    problems: list[ManifestProblem] = []
    if not directory.is_dir():
        return manifests, problems
    for manifest_path in sorted(directory.glob("*/plugin.toml")):
        try:
            manifests.append(read_manifest(manifest_path))
        except ValueError as exc:
            problems.append(ManifestProblem(manifest_path, str(exc)))
    return manifests, problems
