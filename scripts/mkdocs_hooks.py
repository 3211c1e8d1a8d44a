"""MkDocs hooks: pages that are generated from the code, so they cannot drift from it.

Three markers are expanded in the Markdown of any page:

* ``<!-- api: misalatch.models -->`` becomes one ``::: misalatch.models.<module>`` block (mkdocstrings)
  per public module of that package (one block for a plain module), so a module added to the
  package appears in the reference without editing the docs;
* ``<!-- flags: TrainConfig -->`` (or ``<!-- flags: misalatch.training.config:TrainConfig -->``) becomes a
  table of the dataclass's fields as command-line flags (tyro's naming), with type, default and the
  field's docstring; a bare class name is looked up in the whole package, so it survives moves;
* ``<!-- commands -->`` becomes the table of commands of ``misalatch.cli.COMMANDS``, each linked to its
  ``## `misalatch NAME``` section (a command without one is a warning).

Everything is read from the source with :mod:`ast` (nothing is imported, so building the docs needs
neither torch nor data). A public module of ``misalatch/`` that no ``api`` marker covers is a warning,
which ``mkdocs build --strict`` turns into a failure: new code gets a reference page or the build
says so.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.misalatch")

PACKAGE = "misalatch"
_API = re.compile(r"<!--\s*api:\s*([\w.]+)\s*-->")
_FLAGS = re.compile(r"<!--\s*flags:\s*(?:([\w.]+):)?(\w+)\s*-->")
_COMMANDS = re.compile(r"<!--\s*commands\s*-->")

_root: Path = Path(".")
_own_pages: set[str] = set()  # modules an api marker names directly; package markers leave them out


class DocsError(Exception):
    """A marker names something the code does not have."""


def on_config(config: Any) -> Any:
    global _root
    _root = Path(config.config_file_path).resolve().parent
    return config


# ---------------------------------------------------------------------------------------------
# source lookup
# ---------------------------------------------------------------------------------------------
def _module_file(module: str) -> Path:
    base = _root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise DocsError(f"no module {module!r} (looked for {base}.py and {base}/__init__.py)")


def _package_dir(package: str) -> Path:
    path = _root.joinpath(*package.split("."))
    if not (path / "__init__.py").is_file():
        raise DocsError(f"no package {package!r} (no {path}/__init__.py)")
    return path


def public_modules(package: str) -> list[str]:
    """Modules directly in ``package`` (not subpackages), without private ones and ``__main__``."""
    folder = _package_dir(package)
    return [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")]


def all_modules() -> list[str]:
    """Every public module of the package (no ``_private`` parts, no ``__main__``)."""
    out = []
    for path in sorted((_root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(_root).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        if not any(part.startswith(("_", ".")) for part in parts):
            out.append(".".join(parts))
    return out


def _is_module(name: str) -> bool:
    return _root.joinpath(*name.split(".")).with_suffix(".py").is_file()


def documented_modules(name: str) -> list[str]:
    """The modules an ``api`` marker for ``name`` (a module or a package) renders; a package's
    marker leaves out the modules another marker names directly (no module is documented twice)."""
    if _is_module(name):
        return [name]
    return [m for m in public_modules(name) if m not in _own_pages]


# ---------------------------------------------------------------------------------------------
# renderers
# ---------------------------------------------------------------------------------------------
def render_api(name: str) -> str:
    """``::: module`` for a plain module, one block per public module for a package."""
    modules = documented_modules(name)
    if not modules:
        raise DocsError(f"package {name!r} has no public module")
    return "\n\n".join(f"::: {m}" for m in modules)


def _strip(annotation: ast.expr) -> tuple[ast.expr, bool]:
    """Drop ``Optional[...]`` and ``tyro.conf.Positional[...]``; say whether it was positional."""
    positional = False
    while isinstance(annotation, ast.Subscript):
        name = ast.unparse(annotation.value)
        if name.endswith("Positional"):
            positional, annotation = True, annotation.slice
        elif name.endswith("Optional"):
            annotation = annotation.slice
        else:
            break
    return annotation, positional


def _type_text(annotation: ast.expr) -> str:
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value).endswith("Literal"):
        items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        return " \\| ".join(f"`{ast.literal_eval(i)}`" for i in items)
    return f"`{ast.unparse(annotation)}`"


def _default_text(value: ast.expr | None) -> str:
    if value is None:
        return "required"
    try:
        literal = ast.literal_eval(value)
    except ValueError:
        return f"`{ast.unparse(value)}`"
    if literal is None:
        return "—"
    if isinstance(literal, tuple):
        return "`" + " ".join(map(str, literal)) + "`" if literal else "—"
    return f"`{literal}`"


def _one_line(text: str) -> str:
    """A docstring as one table cell: whitespace folded, pipes and angle brackets escaped."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _find_class(module: str | None, name: str) -> tuple[ast.ClassDef, ast.Module]:
    """The class ``name`` in ``module``, or anywhere in the package when no module is given
    (so a marker survives the class moving to another file; two classes of that name are an error)."""
    paths = [_module_file(module)] if module else sorted((_root / PACKAGE).rglob("*.py"))
    found = [(path, node, tree) for path in paths
             for tree in [ast.parse(path.read_text(encoding="utf-8"))]
             for node in ast.walk(tree)
             if isinstance(node, ast.ClassDef) and node.name == name]
    if not found:
        raise DocsError(f"{module or PACKAGE} has no class {name!r}")
    if len(found) > 1:
        where = ", ".join(str(p.relative_to(_root)) for p, _, _ in found)
        raise DocsError(f"class {name!r} is defined in several files ({where}); write <!-- flags: module:{name} -->")
    return found[0][1], found[0][2]


def _aliases(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level type aliases (``Format = Literal[...]``), so a field typed ``Format`` shows its choices."""
    return {node.targets[0].id: node.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Subscript)}


def dataclass_fields(module: str | None, name: str) -> list[tuple[str, ast.expr, ast.expr | None, str]]:
    """(name, annotation, default, docstring) of every field of a dataclass, in dataclass order:
    the fields of its bases (classes of the package) first, a redefined field keeping its place."""
    node, tree = _find_class(module, name)
    fields: dict[str, tuple[str, ast.expr, ast.expr | None, str]] = {}
    for base in node.bases:
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if base_name is None:
            continue
        try:
            inherited = dataclass_fields(None, base_name)
        except DocsError:
            continue  # a base from outside the package (object, Generic, ...)
        fields.update((f[0], f) for f in inherited)
    aliases = _aliases(tree)
    body = node.body
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if ast.unparse(stmt.annotation).startswith("ClassVar"):
                continue
            nxt = body[i + 1] if i + 1 < len(body) else None
            doc = nxt.value.value if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                                      and isinstance(nxt.value.value, str)) else ""
            annotation = stmt.annotation
            if isinstance(annotation, ast.Name) and annotation.id in aliases:
                annotation = aliases[annotation.id]
            fields[stmt.target.id] = (stmt.target.id, annotation, stmt.value, doc)
    if not fields:
        raise DocsError(f"{module or PACKAGE}.{name} has no fields")
    return list(fields.values())


def render_flags(module: str | None, name: str) -> str:
    rows = ["| flag | type | default | meaning |", "|---|---|---|---|"]
    for field, annotation, default, doc in dataclass_fields(module, name):
        inner, positional = _strip(annotation)
        if positional:
            flag = f"`{field.upper()}` (positional)"
        elif ast.unparse(inner) == "bool":
            flag = f"`--{field.replace('_', '-')}` / `--no-{field.replace('_', '-')}`"
        else:
            flag = f"`--{field.replace('_', '-')}`"
        kind = "flag" if ast.unparse(inner) == "bool" else _type_text(inner)
        rows.append(f"| {flag} | {kind} | {_default_text(default)} | {_one_line(doc)} |")
    return "\n".join(rows)


def cli_commands() -> list[tuple[str, str]]:
    """(name, one-line help) of every entry of ``misalatch.cli.COMMANDS``, in order."""
    module = f"{PACKAGE}.cli"
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "COMMANDS" and isinstance(node.value, ast.Dict):
            out = []
            for key, value in zip(node.value.keys, node.value.values):
                # ("help", handler) or Command("help", ...): the help text is the first item
                items = value.elts if isinstance(value, ast.Tuple) else getattr(value, "args", [])
                helptext = items[0] if items else None
                if not (isinstance(key, ast.Constant) and isinstance(helptext, ast.Constant)):
                    raise DocsError(f"{module}.COMMANDS: cannot read the entry {ast.unparse(value)[:60]}")
                out.append((key.value, helptext.value))
            return out
    raise DocsError(f"{module} has no literal COMMANDS table")


def render_commands(markdown: str = "", page: str = "this page") -> str:
    """The command table, each name linked to its section; a command without a ``## `misalatch NAME```
    section on the page is a warning (so a new command gets documented)."""
    rows = ["| command | what it does |", "|---|---|"]
    for name, text in cli_commands():
        if re.search(rf"^##+ `misalatch {re.escape(name)}`", markdown, re.M):
            rows.append(f"| [`misalatch {name}`](#misalatch-{name}) | {_one_line(text)} |")
        else:
            log.warning("%s: command %r has no section; add a heading '## `misalatch %s`' with its flags "
                        "(<!-- flags: ItsArgsClass -->)", page, name, name)
            rows.append(f"| `misalatch {name}` | {_one_line(text)} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------
def expand(markdown: str, page: str = "this page") -> str:
    """The page with every marker replaced (raises DocsError on a marker naming missing code)."""
    markdown = _API.sub(lambda m: render_api(m.group(1)), markdown)
    markdown = _FLAGS.sub(lambda m: render_flags(m.group(1), m.group(2)), markdown)
    return _COMMANDS.sub(lambda m: render_commands(markdown, page), markdown)


def on_files(files: Any, config: Any) -> Any:
    names = [name for file in files.documentation_pages()
             for name in _API.findall(Path(file.abs_src_path).read_text(encoding="utf-8"))]
    _own_pages.clear()
    _own_pages.update(name for name in names if _is_module(name))
    covered: set[str] = set()
    for name in names:
        try:
            covered.update(documented_modules(name))
        except DocsError:
            pass  # reported with the page's name when the page is rendered
    for module in all_modules():
        if module not in covered:
            package = module.rsplit(".", 1)[0]
            log.warning("module %s is in no API reference page: add '<!-- api: %s -->' to a page under "
                        "docs/api/ (or '<!-- api: %s -->' for a single module) and list new pages in "
                        "mkdocs.yml's nav", module, package, module)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    try:
        return expand(markdown, page.file.src_uri)
    except (DocsError, SyntaxError, ValueError) as err:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {err}") from err
