"""Runs: from a :class:`TrainConfig` to trained, evaluated, saved models — and back.

``train(config)`` prepares the data once (text tokenised or mapped to ids exactly once), then for
each seed builds a fresh model, fits it on the train split with model selection on the validation
split, evaluates the best checkpoint once on the test split and writes a run folder:

    <out>/                      one seed: the run folder itself; several seeds: seed-<s>/ each,
      config.yaml               plus aggregate.json / aggregate.csv (mean ± std, per-seed values)
      metrics.json
      history.csv, curves.png   one row per epoch, and its plot
      best.safetensors, best.json, best.optim.safetensors
      tokenizer/ | vocab.json   what the text was prepared with, so the run reloads offline

``load_run(run_dir)`` rebuilds the model from the sidecar and the data with the run's own text
preparation, for ``evaluate``, ``predict`` and ``masks``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from misalatch.data.batching import BatchSpec
from misalatch.data.canonical import CanonicalDataset
from misalatch.data.loading import load_dataset
from misalatch.data.text import apply_vocab, build_vocab, tokenize_for_bert
from misalatch.errors import ConfigError, MisalatchError, ResourceNotFoundError
from misalatch.evaluation.aggregate import AggregateRow, aggregate, write_aggregate
from misalatch.evaluation.plots import plot_history
from misalatch.models.config import MisaConfig
from misalatch.models.encoders import bert_config_dict, build_bert
from misalatch.models.misa import MISA
from misalatch.resources import ResolvedEncoder, load_tokenizer, load_vectors, resolve_text_encoder
from misalatch.training.checkpoint import atomic_write_text, load_weights, read_sidecar, save_checkpoint
from misalatch.training.config import BATCH_SIZES, TrainConfig, dataset_family
from misalatch.training.loop import SplitEvaluation, evaluate, fit
from misalatch.training.seeding import seed_everything

log = logging.getLogger(__name__)

LEARNED_EMBEDDING_SIZE = 300  # d_e of a from-scratch embedding (the original's GloVe width)


# ----------------------------------------------------------------------------------------------
# data + text preparation (once per run)
# ----------------------------------------------------------------------------------------------
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
    model_config: MisaConfig
    spec: BatchSpec
    family: str


def setup_run(cfg: TrainConfig) -> RunSetup:
    """Load the data, prepare the text once, resolve per-dataset defaults and the model config."""
    dataset = load_dataset(cfg.data, data_root=cfg.data_root,
                           synthetic_sizes=dict(zip(("train", "valid", "test"), cfg.synthetic_size)))
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
    model_config = MisaConfig.from_dict({
        "text_encoder": text.kind,
        "text_input_size": text.input_size,
        "vocab_size": _vocab_size(dataset) if text.kind == "glove" else 0,
        "freeze_embeddings": cfg.freeze_embeddings,
        "bert_freeze": cfg.bert_freeze,
        "bert_config": bert_config_dict(text.bert) if text.bert is not None else None,
        "visual_size": dataset.visual_dim or 1,
        "acoustic_size": dataset.acoustic_dim or 1,
        "rnncell": cfg.rnncell,
        "hidden_size": cfg.hidden_size,
        "num_classes": dataset.num_classes if dataset.task == "classification" else 1,
        "dropout": cfg.dropout,
        "activation": cfg.activation,
        "similarity": cfg.similarity,
        "cmd_moments": cfg.cmd_moments,
        "reverse_grad_weight": cfg.reverse_grad_weight,
        "diff_weight": cfg.diff_weight,
        "sim_weight": cfg.sim_weight,
        "recon_weight": cfg.recon_weight,
        "feedback": cfg.feedback,
        "mask_combine": cfg.mask_combine,
        "mask_dropout": cfg.mask_dropout,
        "generator_dropout": cfg.generator_dropout,
        "detach_first_pass": cfg.feedback_detach,
    })
    spec = BatchSpec(text_encoder=text.kind, modalities=cfg.modalities, alignment=dataset.alignment,
                     task=dataset.task, visual_dim=model_config.visual_size, acoustic_dim=model_config.acoustic_size)
    return RunSetup(cfg, dataset, text, model_config, spec, family)


def _vocab_size(dataset: CanonicalDataset) -> int:
    if dataset.embedding is not None:
        return int(dataset.embedding.shape[0])
    if dataset.vocab:
        return len(dataset.vocab)
    return 1 + max(int(s.text_ids.max()) for segs in dataset.splits.values() for s in segs if s.text_ids is not None)


def build_model(setup: RunSetup) -> MISA:
    """A fresh model for one seed (pretrained BERT / GloVe weights copied in)."""
    embedding = torch.from_numpy(setup.text.embedding) if setup.text.embedding is not None else None
    bert = copy.deepcopy(setup.text.bert) if setup.text.bert is not None else None
    return MISA(setup.model_config, bert=bert, embedding=embedding)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One seed's outcome (also in ``<run_dir>/metrics.json``)."""

    seed: int
    run_dir: Path
    best_epoch: int
    dev_loss: float
    validation: dict[str, float]
    test: dict[str, float]


@dataclass
class TrainResult:
    """What :func:`train` returns: one :class:`RunResult` per seed and the aggregate over seeds."""

    out_dir: Path
    runs: list[RunResult]
    aggregate: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: bool = False

    @property
    def test_metrics(self) -> dict[str, float]:
        """Test metrics of the only run, or the mean over seeds."""
        if len(self.runs) == 1:
            return self.runs[0].test
        return {k: v["mean"] for k, v in self.aggregate.items()}


def _claim_out_dir(cfg: TrainConfig, dataset: CanonicalDataset) -> Path:
    out = Path(cfg.out) if cfg.out else Path("runs") / f"{Path(cfg.data).stem}-{cfg.feedback}"
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ConfigError(f"{out}: output folder exists and is not empty; choose another --out or pass --overwrite")
        if not (out / "config.yaml").is_file() and not (out / "aggregate.json").is_file():
            raise ConfigError(f"{out}: refusing to overwrite a folder that is not a misalatch run")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return buffer.getvalue()


def _data_facts(dataset: CanonicalDataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "synthetic": dataset.synthetic,
        "task": dataset.task,
        "alignment": dataset.alignment,
        "split_sizes": dataset.split_sizes(),
        "truncated": dataset.meta.get("truncated", {}),
        "dropped": dataset.meta.get("dropped", {}),
        "nonfinite": dataset.meta.get("nonfinite", {}),
    }


def _save_text_assets(setup: RunSetup, run_dir: Path) -> None:
    if setup.text.tokenizer is not None:
        setup.text.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    if setup.dataset.vocab is not None:
        atomic_write_text(run_dir / "vocab.json", json.dumps(setup.dataset.vocab))


def train_seed(setup: RunSetup, seed: int, run_dir: Path) -> RunResult:
    """Fit one seed, save its best checkpoint, evaluate it once on the test split."""
    cfg = setup.config
    device = resolve_device(cfg.device)
    generator = seed_everything(seed)
    model = build_model(setup).to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_text_assets(setup, run_dir)
    resolved = cfg.replace(seed=seed, seeds=None, out=str(run_dir))
    config_yaml = resolved.to_yaml() + "resolved:\n" + _indent(
        json.dumps({"text_encoder": setup.text.description, "model": setup.model_config.to_dict(),
                    "data": _data_facts(setup.dataset)}, indent=2, default=str))
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    sidecar_base = {"config": resolved.to_dict(), "model_config": setup.model_config.to_dict(), "seed": seed,
                    "data": _data_facts(setup.dataset), "text_encoder": setup.text.description}

    def save_best(epoch: int, dev: SplitEvaluation, optimizer: torch.optim.Optimizer) -> None:
        save_checkpoint(run_dir, "best", model, optimizer=optimizer,
                        sidecar={**sidecar_base, "epoch": epoch, "metrics": {"validation": dev.metrics, "dev_loss": dev.loss}})

    log.info("seed %d: training on %s (%d train / %d valid), device %s", seed, setup.dataset.name,
             len(setup.dataset.splits["train"]), len(setup.dataset.splits["valid"]), device)
    fit_result = fit(
        model, setup.dataset.splits["train"], setup.dataset.splits["valid"], setup.spec,
        batch_size=cfg.batch_size, lr=cfg.lr, clip_value=cfg.clip_value, max_epochs=cfg.max_epochs,
        patience=cfg.patience, trials=cfg.trials, lr_decay=cfg.lr_decay, dev_loss_reduction=cfg.dev_loss_reduction,
        generator=generator, device=device, max_batches_per_epoch=cfg.max_batches_per_epoch, on_improvement=save_best,
    )
    atomic_write_text(run_dir / "history.csv", _history_csv(fit_result.history))
    plot_history(run_dir / "history.csv", run_dir / "curves.png")
    # the model holds the best weights; evaluate validation (for the record) and test once
    kw = dict(batch_size=cfg.batch_size, device=device, reduction=cfg.dev_loss_reduction)
    valid = evaluate(model, setup.dataset.splits["valid"], setup.spec, **kw)
    test = evaluate(model, setup.dataset.splits["test"], setup.spec, **kw)
    metrics = {"validation": valid.metrics, "test": test.metrics, "dev_loss": valid.loss, "test_loss": test.loss,
               "best_epoch": fit_result.best_epoch, "epochs_run": len(fit_result.history), "seed": seed,
               "data": _data_facts(setup.dataset), "text_encoder": setup.text.description}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True))
    save_checkpoint(run_dir, "best", model, sidecar={**sidecar_base, "epoch": fit_result.best_epoch,
                                                      "metrics": {"validation": valid.metrics, "test": test.metrics,
                                                                  "dev_loss": valid.loss}})
    return RunResult(seed, run_dir, fit_result.best_epoch, valid.loss, valid.metrics, test.metrics)


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def train(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainResult:
    """Train MISA (or a MISA+MMLatch variant) as configured; one run per seed.

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or None for the defaults (the
    built-in synthetic data); keyword ``overrides`` win. Returns a :class:`TrainResult`.
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    setup = setup_run(config)
    out = _claim_out_dir(config, setup.dataset)
    seeds = config.run_seeds
    runs = []
    for seed in seeds:
        run_dir = out if len(seeds) == 1 else out / f"seed-{seed}"
        runs.append(train_seed(setup, seed, run_dir))
    result = TrainResult(out_dir=out, runs=runs, synthetic=setup.dataset.synthetic)
    if len(runs) > 1:
        result.aggregate = aggregate([r.test for r in runs])
        group = {"dataset": setup.dataset.name + (" (synthetic)" if setup.dataset.synthetic else ""),
                 "feedback": config.feedback, "text_encoder": setup.text.description.split(" (")[0], "split": "test"}
        write_aggregate([AggregateRow(group=group, seeds=list(seeds), metrics=result.aggregate)], out)
    return result


# ----------------------------------------------------------------------------------------------
# loading a saved run
# ----------------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    model: MISA  # eval mode, best weights
    dataset: CanonicalDataset  # text prepared with the run's own tokenizer / vocabulary
    spec: BatchSpec
    device: torch.device
    sidecar: dict[str, Any]


def load_run(run_dir: str | Path, *, data: str | None = None, data_root: str | None = None,
             device: str = "auto") -> LoadedRun:
    """Rebuild a run's best model and its data (or other ``data``) prepared the same way."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    sidecar = read_sidecar(run_dir, "best")
    cfg = TrainConfig.from_dict(sidecar["config"], source=str(run_dir / "best.json"))
    model_config = MisaConfig.from_dict(sidecar["model_config"])
    if data is not None or data_root is not None:
        cfg = cfg.replace(data=data or cfg.data, data_root=data_root or cfg.data_root)
    dataset = load_dataset(cfg.data, data_root=cfg.data_root,
                           synthetic_sizes=dict(zip(("train", "valid", "test"), cfg.synthetic_size)))
    if model_config.text_encoder == "bert" and dataset._first("bert_ids") is None:
        tok_dir = run_dir / "tokenizer"
        if not tok_dir.is_dir():
            raise ResourceNotFoundError(f"{tok_dir}: the run's tokenizer is missing")
        dataset = tokenize_once(dataset, load_tokenizer(tok_dir), cfg.max_wordpieces)
    elif model_config.text_encoder == "glove" and dataset.has_words and cfg.text_encoder != SOURCE_ENCODER:
        vocab_file = run_dir / "vocab.json"
        if not vocab_file.is_file():
            raise ResourceNotFoundError(f"{vocab_file}: the run's vocabulary is missing")
        dataset = apply_vocab(dataset, json.loads(vocab_file.read_text()))
    dev = resolve_device(device)
    model = MISA(model_config)
    load_weights(run_dir, "best", model)
    model.to(dev).eval()
    spec = BatchSpec(text_encoder=model_config.text_encoder, modalities=cfg.modalities, alignment=dataset.alignment,
                     task=dataset.task, visual_dim=model_config.visual_size, acoustic_dim=model_config.acoustic_size)
    if dataset.visual_dim not in (None, model_config.visual_size) or dataset.acoustic_dim not in (None, model_config.acoustic_size):
        raise MisalatchError(
            f"--data {cfg.data}: feature sizes (visual {dataset.visual_dim}, acoustic {dataset.acoustic_dim}) do not "
            f"match the run's model (visual {model_config.visual_size}, acoustic {model_config.acoustic_size})"
        )
    return LoadedRun(run_dir, cfg, model, dataset, spec, dev, sidecar)


def evaluate_run(run: LoadedRun, splits: tuple[str, ...] = ("valid", "test")) -> dict[str, SplitEvaluation]:
    return {
        split: evaluate(run.model, run.dataset.splits[split], run.spec, batch_size=run.config.batch_size or 32,
                        device=run.device, reduction=run.config.dev_loss_reduction)
        for split in splits
    }


def write_predictions(evaluations: dict[str, SplitEvaluation], path: str | Path) -> Path:
    """One row per segment id: split, id, label, prediction (class and logits for classification)."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    first = next(iter(evaluations.values()))
    n_classes = 1 if first.predictions.ndim == 1 else first.predictions.shape[1]
    header = ["split", "segment_id", "label", "prediction"]
    if n_classes > 1:
        header += [f"logit_{c}" for c in range(n_classes)]
    writer.writerow(header)
    for split, ev in evaluations.items():
        for i, seg_id in enumerate(ev.ids):
            if n_classes == 1:
                writer.writerow([split, seg_id, repr(float(ev.labels[i])), repr(float(ev.predictions[i]))])
            else:
                logits = ev.predictions[i]
                writer.writerow([split, seg_id, int(ev.labels[i]), int(np.argmax(logits)), *map(float, logits)])
    atomic_write_text(path, buffer.getvalue())
    return path
