"""Synthetic data, kept apart from the readers of real formats.

- ``mosi``: the built-in MOSI-like dataset (``--data synthetic``), made in memory.
- ``csd``: CMU-SDK ``.csd`` files (words, features, labels, folds) for the CSD reader.
- ``files``: pickles and folders in the MMSA, MulT, MISA and UR-FUNNY layouts.

Everything they produce is marked synthetic so no result computed from it passes for a real one.
"""

from __future__ import annotations

from misalatch.data.synthetic.csd import write_csd, write_synthetic_csds
from misalatch.data.synthetic.files import (
    write_embedding_and_mapping,
    write_misa_pickles,
    write_mmsa_pickle,
    write_mult_pickle,
    write_urfunny,
)
from misalatch.data.synthetic.mosi import make_synthetic_mosi

__all__ = [
    "make_synthetic_mosi",
    "write_csd",
    "write_embedding_and_mapping",
    "write_misa_pickles",
    "write_mmsa_pickle",
    "write_mult_pickle",
    "write_synthetic_csds",
    "write_urfunny",
]
