"""Plugin manifests: `plugins/<name>/plugin.toml`, read and validated, and the settings a
manifest describes (its defaults, and the values an admin sends checked against it).

A manifest is checked as a whole: `ManifestError.problems` lists every problem found, so a
plugin author fixes them in one go. docs/plugins.md ("Manifest, packaging and signing") is
the author's reference for the fields."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from app.core.errors import InvalidField

NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_IDENTIFIERS = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
ENTRY_POINT = re.compile(rf"^{_IDENTIFIERS}:{_IDENTIFIERS}$")
SETTING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

CAPABILITIES = ("api", "pages", "admin", "jobs", "storage", "settings", "widgets", "events")
"""What a plugin may say it uses; the host wires only the parts a plugin declares."""
DEFAULT_TIME_LIMIT = 5.0
"""Seconds per hook, request or task when a manifest names none."""

_PLUGIN_KEYS = {
    "name",
    "version",
    "display_name",
    "description",
    "author",
    "keel",
    "entry_point",
    "capabilities",
    "time_limit",
}
_TEXT_LIMITS = {"display_name": 100, "description": 2000, "author": 200}
_SETTING_KEYS: dict[str, set[str]] = {
    "boolean": set(),
    "integer": {"minimum", "maximum"},
    "number": {"minimum", "maximum"},
    "string": {"maxLength", "enum"},
}
_COMMON_SETTING_KEYS = {"type", "default", "title", "description"}
_A = {"integer": "an integer", "number": "a number"}


class ManifestError(InvalidField):
    """A plugin.toml (or a stored manifest) that Keel cannot use. `problems` lists each
    problem in words a plugin author can act on; the message joins them."""

    def __init__(self, problems: list[str] | str, field: str | None = None) -> None:
        self.problems = tuple([problems] if isinstance(problems, str) else problems)
        super().__init__("; ".join(self.problems), field, status=422)


@dataclass(frozen=True)
class PluginManifest:
    """A validated plugin.toml. `path` is the plugin's folder (for a manifest read from an
    upload, the folder it will have: its name, relative)."""

    name: str
    version: str
    display_name: str
    description: str
    author: str
    keel: str
    """The Keel versions the plugin supports, a PEP 440 specifier set (">=0.1,<1")."""
    entry_point: str
    """`module:attribute`, the module inside the plugin's folder."""
    capabilities: tuple[str, ...]
    settings_schema: dict[str, Any] | None
    time_limit: float
    path: Path = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON (the registry's `manifest` column); `from_json` reads it back."""
        return {
            "name": self.name,
            "version": self.version,
            "display_name": self.display_name,
            "description": self.description,
            "author": self.author,
            "keel": self.keel,
            "entry_point": self.entry_point,
            "capabilities": list(self.capabilities),
            "time_limit": self.time_limit,
            "settings": self.settings_schema,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path) -> PluginManifest:
        """A manifest stored by `to_json`, validated again (raises ManifestError)."""
        plugin = {key: value for key, value in data.items() if key != "settings"}
        settings = data.get("settings")
        document = (
            {"plugin": plugin} if settings is None else {"plugin": plugin, "settings": settings}
        )
        return manifest_from_document(document, path)


@dataclass(frozen=True)
class ManifestProblem:
    path: Path
    message: str


def parse_manifest(text: str, folder: Path) -> PluginManifest:
    """The manifest in `text` (a plugin.toml) of the plugin whose folder is `folder` (its
    name must be the plugin's name); raises ManifestError listing every problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML: {exc}") from None
    return manifest_from_document(document, folder)


def read_manifest(path: Path) -> PluginManifest:
    """Parse one plugin.toml on disk; raises ManifestError with a message a plugin author
    can act on."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError("plugin.toml must be UTF-8 text") from None
    except OSError as exc:
        raise ManifestError(f"cannot read plugin.toml: {exc.strerror or exc}") from None
    return parse_manifest(text, path.parent)


def manifest_from_document(document: Mapping[str, Any], folder: Path) -> PluginManifest:
    """A manifest from parsed TOML (or JSON of the same shape); raises ManifestError."""
    plugin = document.get("plugin")
    if not isinstance(plugin, dict):
        raise ManifestError("needs a [plugin] table")
    problems: list[str] = []
    problems += [f"[plugin] has no field {key!r}" for key in sorted(set(plugin) - _PLUGIN_KEYS)]
    problems += [
        f"unknown table or key {key!r} (plugin.toml has [plugin] and [settings])"
        for key in sorted(set(document) - {"plugin", "settings"})
    ]

    name = plugin.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("plugin.name must be 2-40 characters: a-z, 0-9, _ and start with a letter")
    elif name != folder.name:
        problems.append(f"plugin.name {name!r} must match its folder {folder.name!r}")

    plugin_version = plugin.get("version")
    if not isinstance(plugin_version, str) or not SEMVER.match(plugin_version):
        problems.append(
            "plugin.version must be a semantic version: MAJOR.MINOR.PATCH, "
            'optionally with -prerelease or +build (e.g. "1.2.0")'
        )
    elif len(plugin_version) > 64:
        problems.append("plugin.version must be at most 64 characters")

    texts: dict[str, str] = {}
    for key, limit in _TEXT_LIMITS.items():
        value = plugin.get(key, "")
        if not isinstance(value, str):
            problems.append(f"plugin.{key} must be a string")
        elif len(value) > limit:
            problems.append(f"plugin.{key} must be at most {limit} characters")
        else:
            texts[key] = value.strip()

    keel = plugin.get("keel")
    if not isinstance(keel, str) or not keel.strip():
        problems.append(
            'plugin.keel must say which Keel versions the plugin supports, e.g. ">=0.1,<1"'
        )
    else:
        try:
            SpecifierSet(keel)
        except InvalidSpecifier:
            problems.append(
                f'plugin.keel {keel!r} is not a version specifier (PEP 440), e.g. ">=0.1,<1"'
            )

    entry_point = plugin.get("entry_point")
    if not isinstance(entry_point, str) or not ENTRY_POINT.match(entry_point):
        problems.append(
            'plugin.entry_point must be "module:attribute" inside the plugin folder, '
            'e.g. "guestbook.plugin:GuestbookPlugin"'
        )

    capabilities = _capabilities(plugin.get("capabilities", []), problems)
    time_limit = _time_limit(plugin.get("time_limit", DEFAULT_TIME_LIMIT), problems)
    schema = document.get("settings")
    settings_schema = None if schema is None else _settings_schema(schema, problems)

    if problems:
        raise ManifestError(problems)
    assert isinstance(name, str) and isinstance(plugin_version, str)
    assert isinstance(keel, str) and isinstance(entry_point, str)
    return PluginManifest(
        name=name,
        version=plugin_version,
        display_name=texts["display_name"] or name,
        description=texts["description"],
        author=texts["author"],
        keel=keel.strip(),
        entry_point=entry_point,
        capabilities=capabilities,
        settings_schema=settings_schema,
        time_limit=time_limit,
        path=folder,
    )


def _capabilities(value: object, problems: list[str]) -> tuple[str, ...]:
    known = ", ".join(CAPABILITIES)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.append(f"plugin.capabilities must be a list of names: {known}")
        return ()
    unknown = [item for item in value if item not in CAPABILITIES]
    if unknown:
        problems.append(
            f"plugin.capabilities: unknown {', '.join(map(repr, unknown))} (known: {known})"
        )
    return tuple(dict.fromkeys(item for item in value if item in CAPABILITIES))


def _time_limit(value: object, problems: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append("plugin.time_limit must be a number of seconds")
        return DEFAULT_TIME_LIMIT
    if not math.isfinite(value) or value <= 0:
        problems.append("plugin.time_limit must be more than 0 seconds")
        return DEFAULT_TIME_LIMIT
    return float(value)


def _settings_schema(schema: object, problems: list[str]) -> dict[str, Any] | None:
    """The [settings] table as a plain schema: {"type": "object", "properties", "required"}."""
    if not isinstance(schema, dict):
        problems.append("[settings] must be a table")
        return None
    before = len(problems)
    extra = set(schema) - {"type", "properties", "required"}
    problems += [f"[settings] has no field {key!r}" for key in sorted(extra)]
    if schema.get("type", "object") != "object":
        problems.append('settings.type must be "object" (or left out)')
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        problems.append("settings.properties must be a table of settings")
        properties = {}
    cleaned: dict[str, dict[str, Any]] = {}
    for name, spec in properties.items():
        prop = _setting_property(name, spec, problems)
        if prop is not None:
            cleaned[name] = prop
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(item, str) for item in required):
        problems.append("settings.required must be a list of setting names")
        required = []
    for item in required:
        if item not in properties:
            problems.append(f"settings.required names {item!r}, which is not a setting")
    if len(problems) > before:
        return None
    return {"type": "object", "properties": cleaned, "required": list(dict.fromkeys(required))}


def _setting_property(name: str, spec: object, problems: list[str]) -> dict[str, Any] | None:
    where = f"settings.properties.{name}"
    if not SETTING_NAME.match(name):
        problems.append(f"{where}: a setting name is a-z, 0-9 and _, starting with a letter")
    if not isinstance(spec, dict):
        problems.append(f"{where} must be a table with a type")
        return None
    kind = spec.get("type")
    if kind not in _SETTING_KEYS:
        problems.append(f"{where}.type must be one of: {', '.join(_SETTING_KEYS)}")
        return None
    before = len(problems)
    allowed = _COMMON_SETTING_KEYS | _SETTING_KEYS[kind]
    problems += [f"{where}: a {kind} setting has no {key!r}" for key in sorted(set(spec) - allowed)]
    for key in ("title", "description"):
        if key in spec and not isinstance(spec[key], str):
            problems.append(f"{where}.{key} must be a string")
    if kind in ("integer", "number"):
        for key in ("minimum", "maximum"):
            bound = spec.get(key)
            if bound is not None and not _is_number(bound, integer=kind == "integer"):
                problems.append(f"{where}.{key} must be {_A[kind]}")
        low, high = spec.get("minimum"), spec.get("maximum")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            problems.append(f"{where}: minimum is more than maximum")
    if kind == "string":
        max_length = spec.get("maxLength")
        if max_length is not None and (not _is_number(max_length, integer=True) or max_length < 0):
            problems.append(f"{where}.maxLength must be a whole number, 0 or more")
        enum = spec.get("enum")
        if enum is not None and (
            not isinstance(enum, list) or not enum or not all(isinstance(v, str) for v in enum)
        ):
            problems.append(f"{where}.enum must be a non-empty list of strings")
    if len(problems) > before:
        return None
    prop = dict(spec)
    if "default" in prop:
        default, error = _coerce(prop, prop["default"])
        if error:
            problems.append(f"{where}.default: {error}")
            return None
        prop["default"] = default
    return prop


def _is_number(value: object, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def check_compatible(manifest: PluginManifest, keel_version: str) -> None:
    """Raise ManifestError unless `keel_version` (the running Keel, `running_keel_version()`)
    is among the versions the plugin supports (`manifest.keel`)."""
    try:
        supported = SpecifierSet(manifest.keel)
        running = Version(keel_version)
    except (InvalidSpecifier, InvalidVersion) as exc:
        raise ManifestError(f"cannot compare Keel versions: {exc}") from None
    # A development or pre-release build counts as the release it leads to: a Keel built
    # from the 0.2 branch runs plugins that ask for >=0.2.
    if not supported.contains(Version(running.base_version), prereleases=True):
        raise ManifestError(
            f"{manifest.name} {manifest.version} supports Keel {manifest.keel}; "
            f"this is Keel {keel_version}"
        )


def running_keel_version() -> str:
    """The installed Keel's version ("0.1.0")."""
    try:
        return version("keel")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


def capped_time_limit(manifest: PluginManifest, cap: float) -> float:
    """Seconds a hook, request or task of the plugin may run: its own limit, at most `cap`
    (PLUGIN_TIME_LIMIT_SECONDS)."""
    return min(manifest.time_limit, cap)


def settings_defaults(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The value of each setting that has a default, by name."""
    if not schema:
        return {}
    return {
        name: prop["default"]
        for name, prop in schema.get("properties", {}).items()
        if "default" in prop
    }


@dataclass(frozen=True)
class SettingField:
    """One setting of a plugin as its admin form shows it."""

    name: str
    type: str
    title: str
    description: str
    default: Any
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]


def settings_fields(schema: Mapping[str, Any] | None) -> list[SettingField]:
    """The form's fields, in the order the manifest declares them."""
    if not schema:
        return []
    return [
        SettingField(
            name=name,
            type=prop["type"],
            title=prop.get("title") or name.replace("_", " ").capitalize(),
            description=prop.get("description", ""),
            default=prop.get("default"),
            minimum=prop.get("minimum"),
            maximum=prop.get("maximum"),
            choices=tuple(prop.get("enum", ())),
        )
        for name, prop in schema.get("properties", {}).items()
    ]


def validate_settings(
    schema: Mapping[str, Any] | None, values: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """`values` checked against a manifest's settings schema: the cleaned values (typed,
    defaults filled in for settings left out) and a message per setting that is wrong,
    every one at once. Form text ("true", "42") is coerced; an empty string counts as left
    out, except for a string setting that is not required."""
    properties: Mapping[str, Any] = schema.get("properties", {}) if schema else {}
    required = set(schema.get("required", [])) if schema else set()
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in values:
        if name not in properties:
            errors[name] = "This is not a setting of this plugin."
    for name, prop in properties.items():
        value = values.get(name)
        left_out = value is None or (
            value == "" and (prop["type"] != "string" or name in required or "enum" in prop)
        )
        if left_out:
            if "default" in prop:
                cleaned[name] = prop["default"]
            elif name in required:
                errors[name] = "This setting is required."
            continue
        coerced, error = _coerce(prop, value)
        if error:
            errors[name] = error
        else:
            cleaned[name] = coerced
    return cleaned, errors


_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def _coerce(prop: Mapping[str, Any], value: object) -> tuple[Any, str | None]:
    """`value` as the type `prop` says, or the reason it cannot be."""
    kind = prop["type"]
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE, None
        return None, "Must be true or false."
    if kind in ("integer", "number"):
        number = _number(value, integer=kind == "integer")
        if number is None:
            return None, "Must be a whole number." if kind == "integer" else "Must be a number."
        if "minimum" in prop and number < prop["minimum"]:
            return None, f"Must be at least {prop['minimum']}."
        if "maximum" in prop and number > prop["maximum"]:
            return None, f"Must be at most {prop['maximum']}."
        return number, None
    if not isinstance(value, str):
        return None, "Must be text."
    if "maxLength" in prop and len(value) > prop["maxLength"]:
        return None, f"Must be at most {prop['maxLength']} characters."
    if "enum" in prop and value not in prop["enum"]:
        return None, f"Must be one of: {', '.join(prop['enum'])}."
    return value, None


def _number(value: object, integer: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if integer:
            return int(value) if value.is_integer() else None
    if isinstance(value, int | float):
        return value if integer else float(value)
    return None


def discover_plugins(directory: Path) -> tuple[list[PluginManifest], list[ManifestProblem]]:
    """Every plugin folder under `directory`, and the manifests that could not be read."""
    manifests: list[PluginManifest] = []
    problems: list[ManifestProblem] = []
    if not directory.is_dir():
        return manifests, problems
    for manifest_path in sorted(directory.glob("*/plugin.toml")):
        if manifest_path.parent.name.startswith("."):  # an unpack under way (archive.py)
            continue
        try:
            manifests.append(read_manifest(manifest_path))
        except ManifestError as exc:
            problems.append(ManifestProblem(manifest_path, exc.message))
    return manifests, problems
