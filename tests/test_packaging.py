"""Packaging: the source folder never shadows the stdlib, and the package imports light."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_stdlib_platform_is_not_shadowed_from_repo_root():
    assert not (ROOT / "platform" / "__init__.py").exists()
    out = _run("import platform; print(platform.__file__); print(platform.python_version())")
    path, version = out.split()
    assert "site-packages" not in path and not path.startswith(str(ROOT))
    assert version.startswith("3.11")


def test_package_import_pulls_no_heavy_dependency():
    out = _run("import sys, freezeempath; print(sorted(m for m in ('torch', 'ray', 'deepspeed') if m in sys.modules))")
    assert out.strip() == "[]"
