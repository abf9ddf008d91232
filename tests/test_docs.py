"""The documentation holds together: every relative link in README.md and docs/ resolves (file and anchor), and
every option of every command is on its page under docs/commands/."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import typer

from cnnkit.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
COMMANDS = ROOT / "docs" / "commands"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """``text`` without fenced code blocks (links inside code are not links)."""
    return _FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        slug, n = github_slug(heading), 1
        while slug in found:  # repeated headings get -1, -2, ...
            slug, n = f"{github_slug(heading)}-{n}", n + 1
        found.add(slug)
    return found


def links(page: Path) -> list[str]:
    return _LINK.findall(_CODE.sub("", _prose(page.read_text(encoding="utf-8"))))


def test_github_slug_matches_githubs_rule() -> None:
    slug = github_slug("Runtimes: `--runtime onnxruntime|openvino|litert`")
    assert slug == "runtimes---runtime-onnxruntimeopenvinolitert"
    slug = github_slug("The done-when matrix: `keras.applications` models")
    assert slug == "the-done-when-matrix-kerasapplications-models"


def test_pages_exist() -> None:
    assert ROOT / "docs" / "index.md" in PAGES and len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_index() -> None:
    index = ROOT / "docs" / "index.md"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index) if t.partition("#")[0]}
    missing = [p.relative_to(ROOT) for p in PAGES if p.parent != ROOT and p != index and p.resolve() not in linked]
    assert not missing, f"not linked from docs/index.md: {missing}"


def test_every_command_option_is_on_its_page() -> None:
    root = typer.main.get_command(app)
    missing = []
    for name, command in root.commands.items():
        page = COMMANDS / f"{name}.md"
        if not page.is_file():
            missing.append(f"{name}: no docs/commands/{name}.md")
            continue
        text = page.read_text(encoding="utf-8")
        for param in command.params:
            for flag in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                documented = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
                if flag.startswith("-") and flag not in ("--help", "-h") and not documented:
                    missing.append(f"{name}: {flag} is not in docs/commands/{name}.md "
                                   f"(python scripts/docs_options.py {name} prints its options table)")
    assert not missing, "\n".join(missing)


def test_every_dotted_cnnkit_name_exists() -> None:
    """``cnnkit.x.y.name`` in the docs names a real module or attribute (schemas, ``cnnkit.eval/1``, are not names)."""
    names: set[str] = set()
    for page in PAGES:
        names |= set(re.findall(r"\bcnnkit(?:\.[A-Za-z_]\w*)+(?![\w/-])", page.read_text(encoding="utf-8")))
    unknown = []
    for name in sorted(names):
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:split]))
                break
            except ModuleNotFoundError:
                continue
        for attribute in parts[split:]:
            found = getattr(found, attribute, None)
        if found is None:
            unknown.append(name)
    assert not unknown, f"named in the docs but not in the code: {unknown}"


def test_the_readme_links_every_command_page() -> None:
    readme = ROOT / "README.md"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(readme) if t.partition("#")[0]}
    missing = [p.name for p in sorted(COMMANDS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md's Documentation list lacks docs/commands/: {missing}"
