"""The recipe: everything that decides the numbers extracted from a clip.

A ``Recipe`` names the tool and version of each extractor, its parameters, the frame rates and the
name of every feature dimension. It is written into a prepared dataset and into every run folder trained
on it, so that ``predict --media`` can re-create the same features from a new clip, or refuse to when the
installed extractors differ (``check_recipe_reproducible``). Its ``Recipe.fingerprint`` keys the
per-clip cache: two recipes with the same fingerprint give the same features from the same file.

Importing this module imports no media library: versions are read from the installed packages' metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import DataFormatError, MediaError

#: Version of the recipe layout (bumped when a field changes meaning).
RECIPE_FORMAT = 1

#: The acoustic extractors a recipe can name. ``afx-egemaps`` is the licence-clean default (MIT);
#: ``opensmile-egemaps`` is opt-in only: openSMILE's licence forbids commercial use, whatever its
#: package metadata says.
ACOUSTIC_EXTRACTORS = ("afx-egemaps", "opensmile-egemaps")
VISUAL_EXTRACTORS = ("mediapipe-facemesh",)

# package that provides each extractor (its installed version is recorded)
_PACKAGES = {"afx-egemaps": "afx-audio", "opensmile-egemaps": "opensmile", "mediapipe-facemesh": "mediapipe"}
DECODER_PACKAGE = "av"


def installed_version(package: str) -> str | None:
    """The installed version of ``package`` from its metadata (no import), or None when absent."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Recipe:
    """How features are made from a clip (frozen; build one with ``default_recipe``).

    The feature names are part of the recipe so that a dataset says what each column is; they are
    derived from the extractors and checked against them by ``from_dict``.
    """

    sample_rate: int = 16000
    """Audio is decoded, down-mixed to mono and resampled to this rate (Hz) before acoustic features."""
    acoustic: str = "afx-egemaps"
    """Acoustic extractor: ``afx-egemaps`` (eGeMAPS v02 low-level descriptors, afx-audio, MIT) or
    ``opensmile-egemaps`` (opt-in; openSMILE is licensed for non-commercial use only)."""
    acoustic_chunk_s: float = 30.0
    """Audio is analysed in chunks of this many seconds (with ``acoustic_context_s`` on each side), so
    that memory does not grow with the clip's length."""
    acoustic_context_s: float = 1.0
    """Seconds of audio on each side of a chunk that are analysed but not kept (pitch tracking and
    smoothing see across chunk edges)."""
    visual: str = "mediapipe-facemesh"
    """Visual extractor: MediaPipe's face mesh (468 landmarks) turned into ``VISUAL_NAMES``."""
    visual_rate: float = 15.0
    """Pictures per second given to the face mesh (a fixed grid: the picture shown at each instant);
    15 keeps a 60-second clip above 5x real time on one core (30 runs at about 6x)."""
    max_side: int = 640
    """Pictures whose longer side is larger are scaled down to it before the face mesh."""
    min_detection_confidence: float = 0.5
    """MediaPipe face detector threshold."""
    min_tracking_confidence: float = 0.5
    """MediaPipe landmark tracking threshold (below it the face is detected again)."""
    tools: tuple[tuple[str, str], ...] = ()
    """(package, version) of the decoder and of each extractor, sorted by package."""
    acoustic_names: tuple[str, ...] = ()
    """Name of each acoustic feature dimension (columns of ``ClipFeatures.acoustic``)."""
    visual_names: tuple[str, ...] = ()
    """Name of each visual feature dimension (columns of ``ClipFeatures.visual``)."""
    format: int = field(default=RECIPE_FORMAT)
    """Version of the recipe layout."""

    @property
    def acoustic_rate(self) -> float:
        """Acoustic rows per second (eGeMAPS uses a 10 ms hop)."""
        return 100.0

    @property
    def acoustic_dim(self) -> int:
        return len(self.acoustic_names)

    @property
    def visual_dim(self) -> int:
        return len(self.visual_names)

    def tool_versions(self) -> dict[str, str]:
        return dict(self.tools)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists for tuples); ``from_dict`` reads it back."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tools":
                value = {name: version for name, version in value}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["acoustic_rate"] = self.acoustic_rate
        out["acoustic_dim"], out["visual_dim"] = self.acoustic_dim, self.visual_dim
        return out

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of ``to_dict`` (keys sorted): the cache key of the recipe."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "recipe") -> Recipe:
        """Validate a recorded recipe (from a dataset or a run folder; treated as untrusted).

        Raises ``misalatch.errors.DataFormatError`` naming ``source``, the field and what was
        expected.
        """
        if not isinstance(data, Mapping):
            raise DataFormatError(f"{source}: expected a mapping of recipe fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} | {"acoustic_rate", "acoustic_dim", "visual_dim"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise DataFormatError(f"{source}: unknown recipe field(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                raise DataFormatError(f"{source}: recipe field '{f.name}' is missing")
            kwargs[f.name] = _field_value(f.name, data[f.name], source)
        recipe = cls(**kwargs)
        recipe.validate(source)
        for name, derived in (("acoustic_rate", recipe.acoustic_rate), ("acoustic_dim", recipe.acoustic_dim),
                              ("visual_dim", recipe.visual_dim)):
            if name in data and data[name] != derived:
                raise DataFormatError(f"{source}: recipe field '{name}' is {data[name]!r}, expected {derived!r}")
        return recipe

    def validate(self, source: str = "recipe") -> None:
        """Check ranges and that the feature names are those of the named extractors."""
        if self.format != RECIPE_FORMAT:
            raise DataFormatError(f"{source}: recipe format {self.format} is not supported (this misalatch "
                                  f"reads format {RECIPE_FORMAT})")
        if self.acoustic not in ACOUSTIC_EXTRACTORS:
            raise DataFormatError(f"{source}: recipe field 'acoustic': expected one of {ACOUSTIC_EXTRACTORS}, "
                                  f"got {self.acoustic!r}")
        if self.visual not in VISUAL_EXTRACTORS:
            raise DataFormatError(f"{source}: recipe field 'visual': expected one of {VISUAL_EXTRACTORS}, "
                                  f"got {self.visual!r}")
        checks = (
            ("sample_rate", 8000 <= self.sample_rate <= 96000, "an integer from 8000 to 96000"),
            ("visual_rate", 0 < self.visual_rate <= 120, "a number of pictures per second in (0, 120]"),
            ("max_side", 64 <= self.max_side <= 4096, "an integer from 64 to 4096"),
            ("acoustic_chunk_s", 2.0 <= self.acoustic_chunk_s <= 600, "seconds from 2 to 600"),
            ("acoustic_context_s", 0.1 <= self.acoustic_context_s <= 10, "seconds from 0.1 to 10"),
            ("min_detection_confidence", 0 <= self.min_detection_confidence <= 1, "a number in [0, 1]"),
            ("min_tracking_confidence", 0 <= self.min_tracking_confidence <= 1, "a number in [0, 1]"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise DataFormatError(f"{source}: recipe field '{name}': expected {expected}, got "
                                      f"{getattr(self, name)!r}")
        from .acoustic import acoustic_names
        from .visual import VISUAL_NAMES

        if self.acoustic_names != acoustic_names(self.acoustic):
            raise DataFormatError(f"{source}: recipe field 'acoustic_names' does not list the {self.acoustic} "
                                  f"features of this misalatch ({len(self.acoustic_names)} names, expected "
                                  f"{len(acoustic_names(self.acoustic))})")
        if self.visual_names != VISUAL_NAMES:
            raise DataFormatError(f"{source}: recipe field 'visual_names' does not list the {self.visual} "
                                  f"features of this misalatch ({len(self.visual_names)} names, expected "
                                  f"{len(VISUAL_NAMES)})")


def _field_value(name: str, value: Any, source: str) -> Any:
    def bad(expected: str) -> DataFormatError:
        return DataFormatError(f"{source}: recipe field '{name}': expected {expected}, got {value!r:.80}")

    if name in ("sample_rate", "max_side", "format"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if name in ("acoustic_chunk_s", "acoustic_context_s", "visual_rate", "min_detection_confidence",
                "min_tracking_confidence"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if name in ("acoustic", "visual"):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if name == "tools":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in value.items()):
            raise bad("a mapping of package name to version string")
        return tuple(sorted(value.items()))
    if name in ("acoustic_names", "visual_names"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    raise AssertionError(name)  # every field is handled above


def _tools(acoustic: str, visual: str) -> tuple[tuple[str, str], ...]:
    packages = (DECODER_PACKAGE, _PACKAGES[acoustic], _PACKAGES[visual])
    return tuple(sorted((p, installed_version(p) or "not installed") for p in packages))


def default_recipe(**changes: Any) -> Recipe:
    """The recipe of this misalatch with the installed extractors' versions; ``changes`` override
    parameters (e.g. ``visual_rate=30.0``). Feature names and tool versions are always derived."""
    from .acoustic import acoustic_names
    from .visual import VISUAL_NAMES

    for derived in ("tools", "acoustic_names", "visual_names", "format"):
        if derived in changes:
            raise DataFormatError(f"recipe: '{derived}' is derived from the extractors, not set")
    base = Recipe()
    try:
        recipe = replace(base, **changes)
    except TypeError as exc:
        raise DataFormatError(f"recipe: {exc}") from None
    recipe = replace(recipe, tools=_tools(recipe.acoustic, recipe.visual),
                     acoustic_names=acoustic_names(recipe.acoustic) if recipe.acoustic in ACOUSTIC_EXTRACTORS
                     else (), visual_names=VISUAL_NAMES)
    recipe.validate()
    return recipe


def check_recipe_reproducible(recorded: Mapping[str, Any] | Recipe, current: Recipe | None = None, *,
                              source: str = "recipe") -> Recipe:
    """The recorded recipe, once it is known that this installation re-creates its features.

    ``current`` defaults to the recorded parameters with the installed tools' versions. Raises
    ``misalatch.errors.MediaError`` in one line naming both versions when a decoder or extractor
    version differs (features from another version are not the same numbers), and
    ``misalatch.errors.DataFormatError`` when ``recorded`` is not a valid recipe.
    """
    recipe = recorded if isinstance(recorded, Recipe) else Recipe.from_dict(recorded, source=source)
    if current is None:
        current = replace(recipe, tools=_tools(recipe.acoustic, recipe.visual))
    want, have = recipe.tool_versions(), current.tool_versions()
    differ = [f"{p} {want.get(p, 'absent')} (installed: {have.get(p, 'absent')})"
              for p in sorted(set(want) | set(have)) if want.get(p) != have.get(p)]
    if differ:
        raise MediaError(f"{source}: the features were extracted with other versions than are installed: "
                         f"{'; '.join(differ)}; install those versions to re-create them")
    if current.fingerprint() != recipe.fingerprint():
        changed = [f.name for f in fields(Recipe) if getattr(current, f.name) != getattr(recipe, f.name)]
        raise MediaError(f"{source}: the recipe differs from the recorded one in {', '.join(changed)}")
    return recipe
