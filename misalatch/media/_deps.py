"""Lazy imports of the media extra, so that ``import misalatch`` and ``misalatch --help`` never load
PyAV, MediaPipe, OpenCV or afx-audio, and a missing extra is one clear error."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from ..errors import MissingDependencyError

INSTALL_HINT = ("pip install 'misalatch[media]' && pip install --no-deps mediapipe==0.10.14 "
                "(mediapipe's declared jax/jaxlib/opencv-contrib are not needed)")


def require(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``av``), or raise ``MissingDependencyError`` saying how to install it."""
    if module.startswith("mediapipe"):
        # MediaPipe's C++ logging (glog/absl) writes INFO and WARNING lines to stderr by default.
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"media extraction needs {module.split('.')[0]} ({exc}): {INSTALL_HINT}") \
            from None
