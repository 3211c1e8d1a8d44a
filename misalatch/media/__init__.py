"""From recorded clips to features: decoding (PyAV), acoustic features (eGeMAPS low-level descriptors,
afx-audio), visual features (MediaPipe face mesh, pose- and scale-normalised) and the recipe that
records how they were made.

Needs the ``media`` extra (``pip install 'misalatch[media]'`` then ``pip install --no-deps
mediapipe==0.10.14``); the media libraries are imported only when a clip is read, so importing this
package is cheap. Guide: docs/own-videos.md.
"""

from __future__ import annotations

from ..errors import MediaError, MissingDependencyError
from .decode import MediaInfo, probe_media
from .features import ClipFeatures, extract_clip
from .recipe import Recipe, check_recipe_reproducible, default_recipe

__all__ = [
    "ClipFeatures",
    "MediaError",
    "MediaInfo",
    "MissingDependencyError",
    "Recipe",
    "check_recipe_reproducible",
    "default_recipe",
    "extract_clip",
    "probe_media",
]
