"""README "Layout" names every module that exists, in its folder, and nothing that does not exist."""

from __future__ import annotations

import re

from helpers import ROOT

FOLDERS = (
    "platform/freezeempath",
    "platform/freezeempath/config",
    "platform/freezeempath/model",
    "platform/freezeempath/codec",
    "platform/freezeempath/data",
    "platform/freezeempath/prepare",
    "platform/freezeempath/train",
    "platform/freezeempath/inference",
    "platform/freezeempath/evaluation",
    "serve",
    "serve/deployments",
    "jobs",
    "jobs/bench",
)


def layout_table() -> dict[str, set[str]]:
    """Folder → module names, read from the README's Layout table rows ``| `folder/` | `a` `b` | … |``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout") :]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| `([\w/]+)/` \| ([^|]+) \|", section, flags=re.M)
    return {folder: set(re.findall(r"`(\w+)`", modules)) for folder, modules in rows}


def modules_in(folder: str) -> set[str]:
    return {p.stem for p in (ROOT / folder).glob("*.py") if p.stem != "__init__"}


def test_the_readme_layout_table_matches_the_tree():
    table = layout_table()
    assert set(table) == set(FOLDERS), "README Layout lists other folders than the tree has"
    for folder in FOLDERS:
        missing, stale = modules_in(folder) - table[folder], table[folder] - modules_in(folder)
        assert not missing and not stale, f"{folder}: README misses {sorted(missing)}, names gone {sorted(stale)}"


def test_every_package_folder_is_listed():
    packages = {
        str(p.parent.relative_to(ROOT))
        for top in ("platform/freezeempath", "serve", "jobs")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert packages == set(FOLDERS)
