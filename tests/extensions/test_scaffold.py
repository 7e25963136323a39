"""`keel plugins new NAME` (app/extensions/services/scaffold.py): the plugin it makes comes
with tests on Keel's test kit, and they pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.errors import InvalidField
from app.extensions.services.scaffold import PluginExists, scaffold
from app.settings import ROOT


def test_a_new_plugin_s_own_tests_pass_on_the_test_kit(tmp_path: Path) -> None:
    folder = scaffold(tmp_path / "plugins", "demo_kit")
    assert (folder / "tests" / "conftest.py").is_file()
    assert (folder / "tests" / "test_demo_kit.py").is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(ROOT / "pyproject.toml"), str(folder / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    passed = re.search(r"(\d+) passed", ran.stdout)
    assert passed and int(passed.group(1)) in (4, 8), ran.stdout  # 4 tests, on 1 or 2 legs


def test_a_name_that_exists_or_is_no_plugin_name_is_refused(tmp_path: Path) -> None:
    scaffold(tmp_path, "demo_kit")
    with pytest.raises(PluginExists):
        scaffold(tmp_path, "demo_kit")
    with pytest.raises(InvalidField):
        scaffold(tmp_path, "Bad-Name")


def test_a_new_plugin_passes_the_checks_make_lint_runs_on_plugins(tmp_path: Path) -> None:
    """ruff as if the files were in Keel's plugins/ (its rules for plugins there), mypy."""
    folder = scaffold(tmp_path / "plugins", "demo_kit")
    tools = Path(sys.executable).parent
    for path in sorted(folder.rglob("*.py")):
        as_in_keel = f"plugins/{path.relative_to(folder.parent)}"
        for check in (["check"], ["format", "--check"]):
            ran = subprocess.run(
                [str(tools / "ruff"), *check, "--stdin-filename", as_in_keel, "-"],
                cwd=ROOT,
                input=path.read_text(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert ran.returncode == 0, f"{as_in_keel}: {ran.stdout}{ran.stderr}"
    mypy = [str(tools / "mypy"), "--no-incremental", str(folder)]
    ran = subprocess.run(mypy, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
