"""Exceptions raised where outside input enters misalatch.

The CLI catches ``MisalatchError`` only and prints its message on one line; anything else is a
bug and keeps its traceback. ``ConfigError`` and ``DataFormatError`` also derive from ``ValueError``
so that generic handlers still catch them (as scikit-learn does).
"""

from __future__ import annotations


class MisalatchError(Exception):
    """Base class of every error misalatch raises on purpose."""


class ConfigError(MisalatchError, ValueError):
    """An unknown, mistyped or out-of-range configuration value."""


class DataFormatError(MisalatchError, ValueError):
    """A data file that does not have the layout its reader expects (names the file and field)."""


class UnsafePickleError(DataFormatError):
    """A pickle holds something outside what the restricted reader admits (a global, an opcode, a
    dtype, a size or depth over the limits); nothing from it was executed."""


class CheckpointError(MisalatchError):
    """A checkpoint that cannot be imported (missing, unexpected or mis-shaped keys, bad format)."""


class ResourceNotFoundError(MisalatchError):
    """An offline resource (text encoder, word vectors, dataset) is not available locally."""


class DownloadError(MisalatchError):
    """A download failed (server down, checksum mismatch); partial files are kept for resuming."""


class MediaError(DataFormatError):
    """A media clip that cannot be used: it cannot be opened or decoded, is empty or truncated, lacks the
    audio or video stream the features need, or a segment lies outside it. The message reads
    ``FILE: reason``."""


class MissingDependencyError(MisalatchError):
    """An optional extra (e.g. ``misalatch[media]``) is not installed; the message names the install command."""
