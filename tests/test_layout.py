"""The import arrows run one way (CONTRIBUTING.md):
errors/io <- models <- data <- media <- evaluation <- training <- experiments <- cli.

Every module's imports (module level and inside functions) are read with ``ast``; a library module that
imports the command line, or a lower room that imports a higher one, fails the test with its file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "misalatch"

# room -> rooms it must not import (data may use models, e.g. models.outputs; nothing below imports cli)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "errors": ("io", "models", "data", "media", "evaluation", "training", "experiments", "cli"),
    "io": ("models", "data", "media", "evaluation", "training", "experiments", "cli"),
    "models": ("data", "media", "evaluation", "training", "experiments", "cli"),
    "data": ("media", "evaluation", "training", "experiments", "cli"),
    "media": ("evaluation", "training", "experiments", "cli"),
    "evaluation": ("training", "experiments", "cli"),
    "training": ("experiments", "cli"),
    "experiments": ("cli",),
}
FEEDBACK, MISA = "misalatch.models.feedback", "misalatch.models.misa"
ENTRY_POINT = "misalatch.__main__"  # `python -m misalatch` is the command line too


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source`` (relative imports resolved)."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from misalatch import cli` / `from misalatch.models import misa` import submodules
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "misalatch" else None


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Broken arrows in one module's source, as ``module:line imports target`` lines."""
    own = "cli" if module == ENTRY_POINT else room(module)
    bad = []
    for line, target in imported_modules(source, module, is_package):
        other = room(target)
        if other is None or other == own:
            if module == FEEDBACK and (target == MISA or target.startswith(MISA + ".")):
                bad.append(f"{module}:{line} imports {target} (the feedback block must not call into the model)")
            continue
        if own != "cli" and other == "cli":
            bad.append(f"{module}:{line} imports {target} (no library module imports the command line)")
        elif own in FORBIDDEN and other in FORBIDDEN[own]:
            bad.append(f"{module}:{line} imports {target} ({own} must not import {other})")
    return bad


def test_every_import_arrow_points_down() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30, f"found only {len(files)} modules under {PACKAGE}"
    bad = [v for f in files for v in violations(f.read_text(), module_name(f, PACKAGE), f.name == "__init__.py")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "module, source",
    [
        ("misalatch.data.loading", "from misalatch.cli import main"),
        ("misalatch.training.runs", "def f():\n    import misalatch.cli.train\n"),
        ("misalatch.models.misa", "from misalatch.data.batching import BatchSpec"),
        ("misalatch.models.losses", "from misalatch.training import loop"),
        ("misalatch.data.cache", "from misalatch.evaluation.metrics import compute_metrics"),
        ("misalatch.data.readers.csd", "from ...training.config import TrainConfig"),
        ("misalatch.data.loading", "from misalatch.media import extract_clip"),
        ("misalatch.media.features", "from misalatch.training.run_dir import load_run"),
        ("misalatch.media.corpus", "def f():\n    from misalatch.cli import main\n"),
        ("misalatch.evaluation.masks", "def f():\n    from misalatch.training.run_dir import load_run\n"),
        ("misalatch.models.feedback", "from misalatch.models.misa import MISA"),
        ("misalatch.models.feedback", "from misalatch.models import misa"),
        ("misalatch.models.feedback", "from . import misa"),
    ],
)
def test_a_planted_violation_is_caught(module: str, source: str) -> None:
    assert violations(source, module), f"{module}: {source!r} should break the layout"


@pytest.mark.parametrize(
    "module, source",
    [
        ("misalatch.cli.train", "from misalatch.training.runs import train"),
        ("misalatch.data.batching", "from misalatch.models.outputs import ModelInputs"),
        ("misalatch.training.runs", "from misalatch.evaluation.aggregate import aggregate"),
        ("misalatch.models.misa", "from misalatch.models.feedback import build_feedback"),
        ("misalatch.evaluation.masks", "from misalatch.data.batching import iterate_batches"),
        ("misalatch.media.corpus", "from misalatch.data.canonical import CanonicalDataset"),
        ("misalatch.training.runs", "from misalatch.media.recipe import Recipe"),
    ],
)
def test_arrows_that_point_down_are_allowed(module: str, source: str) -> None:
    assert violations(source, module) == []
