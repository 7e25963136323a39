"""The plugin API group: app/extensions/api.py and manifest.py."""

from __future__ import annotations

from pathlib import Path

from app.asgi import create_app
from app.extensions.services.manifest import discover_plugins
from app.settings import Settings
from tests.conftest import client_for, with_app_settings


def _manifest(name: str, version: str = "1.0.0", extra: str = "") -> str:
    """A plugin.toml with the required fields (keel, entry_point) besides name and version."""
    return (
        f'[plugin]\nname = "{name}"\nversion = "{version}"\nkeel = ">=0.1"\n'
        f'entry_point = "{name}.plugin:Plugin"\n{extra}'
    )


def _plugin(root: Path, folder: str, manifest: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "plugin.toml").write_text(manifest)


async def test_the_public_index_does_not_list_plugin_folders_that_are_not_active(
    settings: Settings, tmp_path: Path
) -> None:
    _plugin(tmp_path, "hello", _manifest("hello", "1.2.0", 'description = "Hi"\n'))
    app = create_app(with_app_settings(settings, plugins_dir=tmp_path))
    async with client_for(app) as client:
        response = await client.get("/api/plugins")
    await app.state.engine.dispose()
    assert response.status_code == 200
    assert response.json() == {"items": [], "total": 0}


def test_unreadable_manifests_are_reported_not_listed(tmp_path: Path) -> None:
    _plugin(tmp_path, "good", _manifest("good"))
    _plugin(tmp_path, "broken", "[plugin\nname=")
    _plugin(tmp_path, "renamed", _manifest("other"))
    _plugin(tmp_path, "Bad-Name", _manifest("Bad-Name"))
    manifests, problems = discover_plugins(tmp_path)
    assert [m.name for m in manifests] == ["good"]
    messages = {p.path.parent.name: p.message for p in problems}
    assert "not valid TOML" in messages["broken"]
    assert "must match its folder" in messages["renamed"]
    assert "a-z" in messages["Bad-Name"]
