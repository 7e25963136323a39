"""app/extensions/services/manifest.py: plugin.toml, compatibility and plugin settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.errors import InvalidField
from app.extensions.services.manifest import (
    ManifestError,
    PluginManifest,
    capped_time_limit,
    check_compatible,
    discover_plugins,
    parse_manifest,
    read_manifest,
    running_keel_version,
    settings_defaults,
    validate_settings,
)

GUESTBOOK = """
[plugin]
name = "guestbook"
version = "1.2.0"
display_name = "Guestbook"
description = "Visitors sign, editors approve."
author = "Keel"
keel = ">=0.1,<1"
entry_point = "guestbook.plugin:GuestbookPlugin"
capabilities = ["api", "pages", "admin", "storage", "settings"]
time_limit = 2

[settings]
required = ["greeting"]

[settings.properties.needs_approval]
type = "boolean"
default = true
title = "Entries need approval"
description = "An editor approves each entry before it shows."

[settings.properties.page_size]
type = "integer"
minimum = 1
maximum = 100
default = 20

[settings.properties.ratio]
type = "number"
minimum = 0
maximum = 1

[settings.properties.greeting]
type = "string"
maxLength = 10
default = "Hello"

[settings.properties.order]
type = "string"
enum = ["newest", "oldest"]
default = "newest"
"""

MINIMAL = """
[plugin]
name = "guestbook"
version = "1.0.0"
keel = ">=0.1"
entry_point = "guestbook.plugin:Plugin"
"""


def _parse(text: str, folder: str = "guestbook") -> PluginManifest:
    return parse_manifest(text, Path("plugins") / folder)


def _problems(text: str, folder: str = "guestbook") -> tuple[str, ...]:
    with pytest.raises(ManifestError) as caught:
        _parse(text, folder)
    return caught.value.problems


def _with(extra: str, base: str = MINIMAL) -> str:
    """MINIMAL with `extra` lines added to (or replacing keys of) its [plugin] table."""
    keys = {line.split("=")[0].strip() for line in extra.strip().splitlines()}
    lines = [line for line in base.splitlines() if line.split("=")[0].strip() not in keys]
    return "\n".join(lines) + "\n" + extra.strip() + "\n"


def test_a_full_manifest_reads_every_field() -> None:
    manifest = _parse(GUESTBOOK)
    assert manifest.name == "guestbook"
    assert manifest.version == "1.2.0"
    assert manifest.display_name == "Guestbook"
    assert manifest.description == "Visitors sign, editors approve."
    assert manifest.author == "Keel"
    assert manifest.keel == ">=0.1,<1"
    assert manifest.entry_point == "guestbook.plugin:GuestbookPlugin"
    assert manifest.capabilities == ("api", "pages", "admin", "storage", "settings")
    assert manifest.time_limit == 2.0
    assert manifest.path == Path("plugins/guestbook")
    assert manifest.settings_schema is not None
    assert manifest.settings_schema["required"] == ["greeting"]
    assert manifest.settings_schema["properties"]["page_size"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }


def test_a_minimal_manifest_gets_defaults() -> None:
    manifest = _parse(MINIMAL)
    assert manifest.display_name == "guestbook"
    assert (manifest.description, manifest.author) == ("", "")
    assert manifest.capabilities == ()
    assert manifest.settings_schema is None
    assert manifest.time_limit == 5.0


def test_the_manifest_survives_its_json_form() -> None:
    manifest = _parse(GUESTBOOK)
    stored = manifest.to_json()
    assert stored["capabilities"] == ["api", "pages", "admin", "storage", "settings"]
    assert "path" not in stored
    assert PluginManifest.from_json(stored, manifest.path) == manifest


def test_read_manifest_reads_the_file_in_its_folder(tmp_path: Path) -> None:
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "plugin.toml").write_text(GUESTBOOK)
    assert read_manifest(tmp_path / "guestbook" / "plugin.toml").path == tmp_path / "guestbook"


def test_a_manifest_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "plugin.toml").write_bytes(b"\xff\xfe[plugin]")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(tmp_path / "guestbook" / "plugin.toml")


def test_a_manifest_error_is_an_invalid_field() -> None:
    with pytest.raises(InvalidField) as caught:
        _parse("[plugin\n")
    assert caught.value.status == 422
    assert "not valid TOML" in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        '[plugin]\nname = "guestbook"\nversion = "1"\nkeel = "newest"\n'
        'entry_point = "guestbook.plugin"\ncapabilities = ["api", "telepathy"]\n'
        "time_limit = 0\n"
    )
    assert len(problems) == 5
    text = "\n".join(problems)
    for expected in ("semantic version", "plugin.keel", "entry_point", "telepathy", "time_limit"):
        assert expected in text


@pytest.mark.parametrize(
    ("extra", "folder", "expected"),
    [
        ('name = "g"', "g", "2-40 characters"),
        ('name = "Guestbook"', "Guestbook", "a-z"),
        ('name = "9lives"', "9lives", "start with a letter"),
        ('name = "' + "a" * 41 + '"', "a" * 41, "2-40 characters"),
        ('name = "other"', "guestbook", "must match its folder"),
        ('version = "1.2"', "guestbook", "semantic version"),
        ('version = "v1.2.0"', "guestbook", "semantic version"),
        ('version = "01.2.0"', "guestbook", "semantic version"),
        ("version = 1", "guestbook", "semantic version"),
        ('keel = ""', "guestbook", "plugin.keel must say"),
        ('keel = "=> 0.1"', "guestbook", "not a version specifier"),
        ('entry_point = "guestbook/plugin.py:Plugin"', "guestbook", "module:attribute"),
        ('entry_point = ".plugin:Plugin"', "guestbook", "module:attribute"),
        ('capabilities = "api"', "guestbook", "list of names"),
        ('capabilities = ["api", "root"]', "guestbook", "unknown 'root'"),
        ('time_limit = "5s"', "guestbook", "number of seconds"),
        ("time_limit = -1", "guestbook", "more than 0"),
        ("time_limit = true", "guestbook", "number of seconds"),
        ("display_name = 3", "guestbook", "display_name must be a string"),
        ('description = "' + "x" * 2001 + '"', "guestbook", "at most 2000"),
        ('homepage = "https://example.org"', "guestbook", "no field 'homepage'"),
    ],
)
def test_each_problem_of_the_plugin_table(extra: str, folder: str, expected: str) -> None:
    problems = _problems(_with(extra), folder)
    assert any(expected in problem for problem in problems), problems


def test_a_manifest_needs_the_plugin_table_and_the_required_fields() -> None:
    assert _problems('name = "guestbook"\n') == ("needs a [plugin] table",)
    problems = "\n".join(_problems('[plugin]\nname = "guestbook"\nversion = "1.0.0"\n'))
    assert "plugin.keel" in problems
    assert "plugin.entry_point" in problems


def test_unknown_tables_are_refused() -> None:
    problems = _problems(MINIMAL + "\n[dependencies]\nrequests = '*'\n")
    assert any("'dependencies'" in problem for problem in problems)


def test_prerelease_and_build_versions_are_semantic_versions() -> None:
    assert _parse(_with('version = "1.0.0-beta.2+build.7"')).version == "1.0.0-beta.2+build.7"


def test_duplicate_capabilities_count_once() -> None:
    assert _parse(_with('capabilities = ["api", "api", "jobs"]')).capabilities == ("api", "jobs")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('[settings.properties.x]\ntype = "date"', "type must be one of"),
        ("[settings.properties.x]\ndefault = 1", "type must be one of"),
        ('[settings.properties.X]\ntype = "boolean"', "a setting name"),
        ('[settings.properties.x]\ntype = "boolean"\ndefault = "yes please"', "true or false"),
        ('[settings.properties.x]\ntype = "boolean"\nmaximum = 1', "has no 'maximum'"),
        ('[settings.properties.x]\ntype = "integer"\nminimum = 0.5', "an integer"),
        ('[settings.properties.x]\ntype = "integer"\nminimum = 5\nmaximum = 1', "minimum is more"),
        ('[settings.properties.x]\ntype = "integer"\nmaximum = 3\ndefault = 4', "at most 3"),
        ('[settings.properties.x]\ntype = "number"\nminimum = "0"', "a number"),
        ('[settings.properties.x]\ntype = "string"\nmaxLength = -1', "maxLength"),
        ('[settings.properties.x]\ntype = "string"\nenum = []', "enum must be"),
        ('[settings.properties.x]\ntype = "string"\nenum = ["a"]\ndefault = "b"', "one of: a"),
        ('[settings.properties.x]\ntype = "string"\ntitle = 1', "title must be a string"),
        ('[settings]\nrequired = ["nothing"]', "'nothing', which is not a setting"),
        ('[settings]\ntype = "array"', 'must be "object"'),
        ("[settings]\nproperties = 1", "a table of settings"),
        ("[settings]\nitems = 1", "no field 'items'"),
    ],
)
def test_each_problem_of_the_settings_schema(settings: str, expected: str) -> None:
    problems = _problems(MINIMAL + "\n" + settings + "\n")
    assert any(expected in problem for problem in problems), problems


def test_the_running_keel_is_checked_against_the_supported_versions() -> None:
    manifest = _parse(_with('keel = ">=0.1,<1"'))
    check_compatible(manifest, "0.1.0")
    check_compatible(manifest, "0.9.3")
    for outside in ("0.0.9", "1.0.0", "2.1"):
        with pytest.raises(ManifestError, match=r"supports Keel >=0.1,<1; this is Keel"):
            check_compatible(manifest, outside)


def test_a_development_keel_counts_as_its_version() -> None:
    check_compatible(_parse(_with('keel = ">=0.2"')), "0.2.0.dev3+g1234")


def test_an_unreadable_running_version_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="cannot compare"):
        check_compatible(_parse(MINIMAL), "not a version")


def test_the_installed_keel_has_a_version() -> None:
    check_compatible(_parse(_with('keel = ">=0.1"')), running_keel_version())


def test_the_time_limit_is_capped_by_configuration() -> None:
    manifest = _parse(_with("time_limit = 60"))
    assert capped_time_limit(manifest, 30.0) == 30.0
    assert capped_time_limit(_parse(MINIMAL), 30.0) == 5.0


def _schema() -> dict[str, object]:
    schema = _parse(GUESTBOOK).settings_schema
    assert schema is not None
    return schema


def test_settings_defaults_are_the_schema_defaults() -> None:
    assert settings_defaults(_schema()) == {
        "needs_approval": True,
        "page_size": 20,
        "greeting": "Hello",
        "order": "newest",
    }
    assert settings_defaults(None) == {}


def test_settings_from_a_form_are_coerced_to_their_types() -> None:
    cleaned, errors = validate_settings(
        _schema(),
        {"needs_approval": "off", "page_size": " 50 ", "ratio": "0.25", "greeting": "Hi"},
    )
    assert errors == {}
    assert cleaned == {
        "needs_approval": False,
        "page_size": 50,
        "ratio": 0.25,
        "greeting": "Hi",
        "order": "newest",
    }


def test_settings_from_json_keep_their_types() -> None:
    cleaned, errors = validate_settings(
        _schema(), {"needs_approval": True, "page_size": 7.0, "ratio": 1, "order": "oldest"}
    )
    assert errors == {}
    assert cleaned["page_size"] == 7 and isinstance(cleaned["page_size"], int)
    assert cleaned["ratio"] == 1.0 and isinstance(cleaned["ratio"], float)
    assert cleaned["order"] == "oldest"


def test_every_wrong_setting_is_reported_at_once() -> None:
    cleaned, errors = validate_settings(
        _schema(),
        {
            "needs_approval": "maybe",
            "page_size": "0",
            "ratio": "nan",
            "greeting": "Hello there, friend",
            "order": "random",
            "colour": "blue",
        },
    )
    assert errors == {
        "needs_approval": "Must be true or false.",
        "page_size": "Must be at least 1.",
        "ratio": "Must be a number.",
        "greeting": "Must be at most 10 characters.",
        "order": "Must be one of: newest, oldest.",
        "colour": "This is not a setting of this plugin.",
    }
    assert cleaned == {}


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("12.5", "Must be a whole number."),
        (12.5, "Must be a whole number."),
        (True, "Must be a whole number."),
        ("101", "Must be at most 100."),
        ([1], "Must be a whole number."),
    ],
)
def test_integer_settings(value: object, error: str) -> None:
    assert validate_settings(_schema(), {"page_size": value})[1] == {"page_size": error}


def test_a_required_setting_without_a_default_must_be_given() -> None:
    schema = _parse(
        MINIMAL + '\n[settings]\nrequired = ["site"]\n[settings.properties.site]\ntype = "string"\n'
    ).settings_schema
    assert validate_settings(schema, {}) == ({}, {"site": "This setting is required."})
    assert validate_settings(schema, {"site": ""}) == ({}, {"site": "This setting is required."})
    assert validate_settings(schema, {"site": "x"}) == ({"site": "x"}, {})


def test_left_out_settings_take_their_default_and_optional_text_may_be_empty() -> None:
    schema = _parse(
        MINIMAL + '\n[settings.properties.note]\ntype = "string"\n'
        '[settings.properties.limit]\ntype = "integer"\n'
    ).settings_schema
    assert validate_settings(schema, {"note": "", "limit": ""}) == ({"note": ""}, {})
    assert validate_settings(_schema(), {"page_size": ""})[0]["page_size"] == 20


def test_a_plugin_without_settings_takes_none() -> None:
    assert validate_settings(None, {}) == ({}, {})
    assert validate_settings(None, {"x": 1}) == ({}, {"x": "This is not a setting of this plugin."})


def test_discovery_skips_folders_being_unpacked(tmp_path: Path) -> None:
    (tmp_path / ".guestbook-x1y2").mkdir()
    (tmp_path / ".guestbook-x1y2" / "plugin.toml").write_text(MINIMAL)
    (tmp_path / "guestbook").mkdir()
    (tmp_path / "guestbook" / "plugin.toml").write_text(MINIMAL)
    manifests, problems = discover_plugins(tmp_path)
    assert [m.name for m in manifests] == ["guestbook"]
    assert problems == []
