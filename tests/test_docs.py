"""The README and the documentation site: size, links, and a strict MkDocs build that really fails.

The site build is what CI checks (``bash scripts/test.sh`` runs this file): ``mkdocs build --strict``
turns every broken link, broken anchor, missing API reference and undocumented module into an error.
Every build here writes into ``tmp_path`` only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_LIMIT = 12 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Link targets of a Markdown file that point into the repository (no URLs, no code)."""
    text = _CODE.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=300,
    )


def _hooks() -> ModuleType:
    """The docs hook module, loaded from its file (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("misalatch_mkdocs_hooks", REPO / "scripts" / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.on_config(SimpleNamespace(config_file_path=str(REPO / "mkdocs.yml")))
    return module


# ---------------------------------------------------------------------------------------------
# README and links
# ---------------------------------------------------------------------------------------------
def test_readme_is_short() -> None:
    size = (REPO / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT} (move details into docs/)"


def test_readme_keeps_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    broken = [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{path.relative_to(REPO)}: links to missing files: {broken}"


def test_link_checker_sees_links(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("[a](x.md) [b](sub/y.md#part) [web](https://e.org) [anchor](#here) `[code](no.md)`\n"
                    "```\n[fenced](no.md)\n```\n![img](pic.png)\n")
    assert relative_links(page) == ["x.md", "sub/y.md#part", "pic.png"]


# ---------------------------------------------------------------------------------------------
# generated content (the hooks)
# ---------------------------------------------------------------------------------------------
def test_flag_table_lists_every_train_config_field() -> None:
    from misalatch.training.config import TrainConfig

    table = _hooks().expand("<!-- flags: TrainConfig -->")
    for field in dataclasses.fields(TrainConfig):
        assert f"`--{field.name.replace('_', '-')}`" in table, field.name
    assert "`--max-epochs` | `int` | `500` | Upper bound on epochs. |" in table


def test_command_table_lists_every_command() -> None:
    from misalatch.cli import COMMANDS

    hooks = _hooks()
    assert [name for name, _ in hooks.cli_commands()] == list(COMMANDS)
    sections = "".join(f"## `misalatch {name}`\n" for name in COMMANDS)
    table = hooks.expand("<!-- commands -->\n" + sections)
    for name, entry in COMMANDS.items():
        assert f"[`misalatch {name}`](#misalatch-{name})" in table and entry[0] in table


def test_command_without_section_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from misalatch.cli import COMMANDS

    first, *others = COMMANDS
    with caplog.at_level("WARNING", logger="mkdocs.hooks.misalatch"):
        table = _hooks().expand("<!-- commands -->\n" + "".join(f"## `misalatch {n}`\n" for n in others), "cli.md")
    assert [r.getMessage() for r in caplog.records] == [
        f"cli.md: command {first!r} has no section; add a heading '## `misalatch {first}`' with its flags "
        "(<!-- flags: ItsArgsClass -->)"]
    assert f"| `misalatch {first}` |" in table  # listed, not linked to a missing anchor


def test_flag_table_follows_dataclass_inheritance(tmp_path: Path) -> None:
    (tmp_path / "misalatch" / "lib").mkdir(parents=True)
    (tmp_path / "misalatch" / "__init__.py").write_text("")
    (tmp_path / "misalatch" / "lib" / "__init__.py").write_text("")
    (tmp_path / "misalatch" / "lib" / "base.py").write_text(
        'Kind = Literal["a", "b"]\n\nclass Source:\n    kind: Kind\n    """What to read."""\n'
        '    limit: Optional[int] = None\n    """Upper <bound>."""\n')
    (tmp_path / "misalatch" / "cmd.py").write_text(
        "class Args(Source):\n    out: tyro.conf.Positional[str]\n    limit: int = 3\n"
        "    flag: bool = True\n    \"\"\"Say | so.\"\"\"\n")
    hooks = _hooks()
    hooks.on_config(SimpleNamespace(config_file_path=str(tmp_path / "mkdocs.yml")))
    rows = hooks.render_flags(None, "Args").splitlines()[2:]
    assert rows == [
        "| `--kind` | `a` \\| `b` | required | What to read. |",
        "| `--limit` | `int` | `3` |  |",  # redefined in the subclass: its place, the new default
        "| `OUT` (positional) | `str` | required |  |",
        "| `--flag` / `--no-flag` | flag | `True` | Say \\| so. |",
    ]
    assert hooks.all_modules() == ["misalatch.cmd", "misalatch.lib.base"]


def test_markers_naming_missing_code_fail() -> None:
    hooks = _hooks()
    for marker in ("<!-- flags: NoSuchArgs -->", "<!-- api: misalatch.no_such_room -->",
                   "<!-- flags: misalatch.training.config:NoSuchConfig -->"):
        with pytest.raises(hooks.DocsError):
            hooks.expand(marker)


def test_api_pages_cover_every_module() -> None:
    hooks = _hooks()
    names = [n for p in (DOCS / "api").glob("*.md") for n in hooks._API.findall(p.read_text(encoding="utf-8"))]
    hooks._own_pages.update(n for n in names if hooks._is_module(n))
    covered = {m for n in names for m in hooks.documented_modules(n)}
    assert set(hooks.all_modules()) - covered == set()
    assert "misalatch.training.config" in covered


# ---------------------------------------------------------------------------------------------
# the site build
# ---------------------------------------------------------------------------------------------
def _top_level(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def test_site_builds_strict(tmp_path: Path) -> None:
    before_repo, before_docs = _top_level(REPO), sorted(str(p) for p in DOCS.rglob("*"))
    result = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr

    cli = (tmp_path / "site" / "cli.html").read_text(encoding="utf-8")
    from misalatch.training.config import TrainConfig

    for field in dataclasses.fields(TrainConfig):  # the generated table reached the page
        assert f"--{field.name.replace('_', '-')}" in cli, field.name
    reference = (tmp_path / "site" / "api" / "training.html").read_text(encoding="utf-8")
    assert 'id="misalatch.training.config.TrainConfig"' in reference
    assert_works_from_disk(tmp_path / "site")
    assert _top_level(REPO) == before_repo and sorted(str(p) for p in DOCS.rglob("*")) == before_docs


_HREF = re.compile(r'(?:href|src)="([^"#?]*)[^"]*"')
_ROLE = re.compile(r":(class|func|mod|data|meth|attr|exc|obj):")


def assert_works_from_disk(site: Path) -> None:
    """Every link between the site's pages names a file, never a folder (a browser opening the site from
    disk shows a folder's listing, not its index.html); no page shows a raw Sphinx role."""
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")  # 404.html: only for a server
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in _HREF.findall(text):
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # a same-page anchor, a URL, a data: image
            resolved = (page.parent / target).resolve()
            assert resolved.is_file(), f"{page.relative_to(site)}: link {target!r} is a folder or missing"
        body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        assert not _ROLE.search(re.sub(r"<[^>]+>", "", body)), f"{page.relative_to(site)}: a raw Sphinx role"


def test_disk_check_sees_folder_links_and_roles(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("<p>x</p>")
    (tmp_path / "index.html").write_text('<a href="sub/">sub</a>')
    with pytest.raises(AssertionError, match="is a folder or missing"):
        assert_works_from_disk(tmp_path)
    (tmp_path / "index.html").write_text('<a href="sub/index.html">sub</a> see :class:<code>X</code>')
    with pytest.raises(AssertionError, match="raw Sphinx role"):
        assert_works_from_disk(tmp_path)
    (tmp_path / "index.html").write_text('<a href="sub/index.html#top">sub</a> <a href="https://x.org/">x</a>')
    assert_works_from_disk(tmp_path)


def _tiny_site(tmp_path: Path, pages: dict[str, str], plugins: list | None = None) -> Path:
    """A small site with the project's validation settings (and, if given, plugins)."""
    project = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    config = {key: project[key] for key in ("strict", "validation", "markdown_extensions")}
    config.update(site_name="tiny", docs_dir="docs", plugins=plugins or [])
    (tmp_path / "docs").mkdir()
    for name, text in pages.items():
        (tmp_path / "docs" / name).write_text(text, encoding="utf-8")
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_strict_build_fails_on_broken_links(tmp_path: Path) -> None:
    config = _tiny_site(tmp_path, {
        "index.md": "# Home\n\n[fine](other.md#section) [gone](no-such-page.md)\n",
        "other.md": "# Other\n\n## Section\n\n[bad anchor](index.md#no-such-heading)\n",
    })
    result = _build(config, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no-such-page.md" in output and "no-such-heading" in output
    assert "other.md#section" not in output  # a good link is not reported


def test_strict_build_fails_on_missing_reference(tmp_path: Path) -> None:
    plugins = [{"mkdocstrings": {"default_handler": "python", "handlers": {"python": {"paths": [str(REPO)]}}}}]
    config = _tiny_site(tmp_path, {"index.md": "# API\n\n::: misalatch.no_such_module\n"}, plugins)
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0
    assert "misalatch.no_such_module" in result.stdout + result.stderr
