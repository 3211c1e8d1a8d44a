"""Setting up a run: the data loaded once, the text prepared once, the model config and fresh models.

``setup_run`` turns a ``TrainConfig`` into a ``RunSetup`` (data with its text tokenised
or mapped to ids exactly once, per-dataset defaults resolved, the config of the model named by
``--model``, built through ``misalatch.models.registry``); ``build_model`` makes a fresh model
from it for each seed.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from misalatch.data.batching import BatchSpec
from misalatch.data.canonical import CanonicalDataset
from misalatch.data.loading import load_dataset
from misalatch.data.text import build_vocab, tokenize_for_bert
from misalatch.errors import ConfigError, DataFormatError
from misalatch.models.config import MisaConfig
from misalatch.models.encoders import bert_config_dict, build_bert
from misalatch.models.registry import ModelConfig, get_model
from misalatch.resources import ResolvedEncoder, load_tokenizer, load_vectors, resolve_text_encoder
from misalatch.training.config import BATCH_SIZES, TrainConfig, dataset_family

log = logging.getLogger(__name__)

LEARNED_EMBEDDING_SIZE = 300  # d_e of a from-scratch embedding (the original's GloVe width)


@dataclass
class TextSetup:
    """What the text was prepared with; enough to rebuild the text encoder for every seed."""

    kind: str  # bert | glove | vectors
    description: str
    bert: nn.Module | None = None  # pretrained BERT, copied per seed
    tokenizer: Any = None
    embedding: np.ndarray | None = None  # (V, d_e) initial GloVe matrix
    input_size: int = 0  # d_b or d_e


SOURCE_ENCODER = "source"  # the vocabulary ids and embedding matrix that ship with the data


def _auto_encoder(dataset: CanonicalDataset, requested: str | None) -> str | None:
    """Datasets without words can only use what they carry (DATA.md §6, §7)."""
    if requested is not None or dataset.has_words:
        return requested
    if dataset.text_vector_dim is not None:
        return "vectors"
    if dataset._first("text_ids") is not None:
        return SOURCE_ENCODER  # UR-FUNNY V1: ids + the release's own GloVe matrix
    return requested


def tokenize_once(dataset: CanonicalDataset, tokenizer: Any, max_wordpieces: int) -> CanonicalDataset:
    """BERT ids for every segment: kept when the source ships them (MMSA, whose A/V steps are
    aligned to those tokens), otherwise made from the words with the run's tokenizer."""
    if dataset._first("bert_ids") is not None:
        log.info("%s: using the BERT token ids stored with the data (bert-base-uncased vocabulary)", dataset.name)
        return dataset
    if not dataset.has_words:
        raise ConfigError(f"{dataset.name}: has no words or BERT ids; use --text-encoder source, glove, learned or vectors")
    return tokenize_for_bert(dataset, tokenizer, max_wordpieces=max_wordpieces)


def prepare_text(dataset: CanonicalDataset, cfg: TrainConfig) -> tuple[CanonicalDataset, TextSetup]:
    """Tokenise (BERT) or map to ids (GloVe) exactly once; report truncation."""
    requested = _auto_encoder(dataset, cfg.text_encoder)
    if dataset.alignment == "token" and requested in ("glove", "learned", SOURCE_ENCODER, "vectors") or (
        dataset.alignment == "token" and requested is not None and requested.startswith("glove:")
    ):
        raise ConfigError(f"{dataset.name}: token-aligned data (MMSA aligned_50) needs a BERT text encoder, "
                          f"not --text-encoder {requested}")
    if requested == SOURCE_ENCODER:
        if dataset._first("text_ids") is None:
            raise ConfigError(f"{dataset.name}: --text-encoder source needs vocabulary ids stored with the data")
        embedding = dataset.embedding
        size = int(embedding.shape[1]) if embedding is not None else LEARNED_EMBEDDING_SIZE
        description = "vocabulary ids and embedding matrix shipped with the data" if embedding is not None \
            else "vocabulary ids shipped with the data, embedding learned from scratch"
        log.info("text encoder: %s", description)
        return dataset, TextSetup("glove", description, embedding=embedding, input_size=size)
    encoder: ResolvedEncoder = resolve_text_encoder(requested)
    log.info("text encoder: %s", encoder.description)
    if encoder.kind == "bert":
        assert encoder.path is not None
        tokenizer = load_tokenizer(encoder.path)
        dataset = tokenize_once(dataset, tokenizer, cfg.max_wordpieces)
        bert = build_bert(path=str(encoder.path))
        return dataset, TextSetup("bert", encoder.description, bert=bert, tokenizer=tokenizer,
                                  input_size=int(bert.config.hidden_size))
    if encoder.kind == "vectors":
        if dataset.text_vector_dim is None:
            raise ConfigError(f"{dataset.name}: --text-encoder vectors needs precomputed word vectors in the data")
        return dataset, TextSetup("vectors", encoder.description, input_size=dataset.text_vector_dim)
    # glove kind: a fresh vocabulary over the words, initialised from the chosen vectors
    if not dataset.has_words:
        raise ConfigError(f"{dataset.name}: has no words for a new vocabulary; use --text-encoder source")
    words = {w for segs in dataset.splits.values() for s in segs for w in (s.words or [])}
    vectors = load_vectors(encoder, restrict_to=words)
    dataset = build_vocab(dataset, vectors)
    embedding = dataset.embedding
    size = int(embedding.shape[1]) if embedding is not None else LEARNED_EMBEDDING_SIZE
    return dataset, TextSetup("glove", encoder.description, embedding=embedding, input_size=size)


@dataclass
class RunSetup:
    config: TrainConfig  # resolved: batch_size and bert_freeze filled
    dataset: CanonicalDataset
    text: TextSetup
    model_config: ModelConfig  # the config class of cfg.model
    spec: BatchSpec
    family: str


def setup_run(cfg: TrainConfig) -> RunSetup:
    """Load the data, prepare the text once, resolve per-dataset defaults and the model config."""
    dataset = load_dataset(cfg.data, data_root=cfg.data_root,
                           synthetic_sizes=dict(zip(("train", "valid", "test"), cfg.synthetic_size)))
    if dataset.meta.get("unlabelled"):
        raise ConfigError(f"--data {cfg.data}: has no labels (written by `misalatch extract --text` or from transcripts "
                          "without a label column); predict on it, or extract labelled transcripts to train")
    missing = set(cfg.modalities) - set(dataset.present_modalities())
    if missing:
        names = {"t": "text", "a": "acoustic", "v": "visual"}
        raise ConfigError(
            f"--data {cfg.data}: the data has no {', '.join(names[m] for m in sorted(missing))} features but "
            f"--modalities is {cfg.modalities!r}; use --modalities {''.join(m for m in 'tav' if m not in missing)}"
        )
    family = dataset_family(dataset.name)
    cfg = cfg.replace(
        batch_size=cfg.batch_size or BATCH_SIZES[family],
        bert_freeze=cfg.bert_freeze or MisaConfig.for_dataset(family).bert_freeze,
    )
    dataset, text = prepare_text(dataset, cfg)
    log.info("data: %s%s, split sizes %s", dataset.name, " (SYNTHETIC)" if dataset.synthetic else "",
             dataset.split_sizes())
    model = get_model(cfg.model)
    if cfg.preset is None and model.recipe != "misa":
        log.warning("--model %s without a preset: training with the TrainConfig defaults (MISA's recipe); "
                    "TrainConfig.from_dict / --model start from the model's own recipe (preset %s)",
                    cfg.model, model.recipe)
    # the model reads its fields out of the run's flat options; the sizes come from the data and text
    model_config = model.config_from_options({
        **cfg.to_dict(),
        "text_encoder": text.kind,
        "text_input_size": text.input_size,
        "vocab_size": _vocab_size(dataset) if text.kind == "glove" else 0,
        "bert_config": bert_config_dict(text.bert) if text.bert is not None else None,
        "visual_size": dataset.visual_dim or 1,
        "acoustic_size": dataset.acoustic_dim or 1,
        "num_classes": dataset.num_classes if dataset.task == "classification" else 1,
    })
    check_token_ids(dataset, model_config, source=f"--data {cfg.data}")
    spec = BatchSpec(text_encoder=text.kind, modalities=cfg.modalities, alignment=dataset.alignment,
                     task=dataset.task, visual_dim=model_config.visual_size, acoustic_dim=model_config.acoustic_size)
    return RunSetup(cfg, dataset, text, model_config, spec, family)


def _vocab_size(dataset: CanonicalDataset) -> int:
    if dataset.embedding is not None:
        return int(dataset.embedding.shape[0])
    if dataset.vocab:
        return len(dataset.vocab)
    return 1 + max(int(s.text_ids.max()) for segs in dataset.splits.values() for s in segs if s.text_ids is not None)


def check_token_ids(dataset: CanonicalDataset, model_config: ModelConfig, *, source: str) -> None:
    """Every token id inside the model's vocabulary, checked before a batch is built (otherwise an
    out-of-range or negative id is an IndexError deep inside torch's embedding)."""
    # vocab_size / bert_config are not part of the ModelConfig seam: a model without them is not checked
    if model_config.text_encoder == "glove":
        field_name, size = "text_ids", int(getattr(model_config, "vocab_size", 0) or 0)
    elif model_config.text_encoder == "bert":
        field_name, size = "bert_ids", int((getattr(model_config, "bert_config", None) or {}).get("vocab_size") or 0)
    else:
        return
    if size <= 0:
        return
    for split, segments in dataset.splits.items():
        for seg in segments:
            ids = getattr(seg, field_name, None)
            if ids is None or len(ids) == 0:
                continue
            low, high = int(np.min(ids)), int(np.max(ids))
            if low < 0 or high >= size:
                raise DataFormatError(
                    f"{source}: split {split!r}, segment {seg.id!r}: {field_name} holds id {low if low < 0 else high}, "
                    f"outside the vocabulary of {size} entries (0..{size - 1}); the ids and the vocabulary or "
                    "embedding matrix do not belong together"
                )


def build_model(setup: RunSetup) -> nn.Module:
    """A fresh model for one seed (pretrained BERT / GloVe weights copied in)."""
    embedding = torch.from_numpy(setup.text.embedding) if setup.text.embedding is not None else None
    bert = copy.deepcopy(setup.text.bert) if setup.text.bert is not None else None
    return get_model(setup.config.model).build(setup.model_config, bert=bert, embedding=embedding)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)
