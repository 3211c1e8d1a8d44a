"""The run folder's life: claimed, written (config, history and curves, metrics, text assets) and
loaded back for ``evaluate``, ``predict`` and ``masks``.

    <out>/                      one seed: the run folder itself; several seeds: seed-<s>/ each,
      config.yaml               plus aggregate.json / aggregate.csv (mean ± std, per-seed values)
      metrics.json
      history.csv, curves.png   one row per epoch, and its plot
      scatter-test.png          predicted vs true score (regression)
      confusion-test.png        test confusion matrix (Acc-7 classes for regression, the classes for UR-FUNNY)
      best.safetensors, best.json, best.manifest.json   the best checkpoint, committed as one set
      resume.*                  while the run is in progress: what ``train --resume`` continues from
      run.json                  the marker: this folder is misalatch's, and what it wrote (misalatch.io.owned)
      tokenizer/ | vocab.json   what the text was prepared with, so the run reloads offline

``load_run`` rebuilds the model from the sidecar and the data with the run's own text preparation.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from misalatch.data.batching import BatchSpec
from misalatch.data.canonical import CanonicalDataset
from misalatch.data.loading import load_dataset
from misalatch.data.text import apply_vocab, read_vocab_file
from misalatch.errors import CheckpointError, ConfigError, MisalatchError, ResourceNotFoundError
from misalatch.evaluation.plots import plot_history, prediction_pngs
from misalatch.models.registry import ModelSpec, get_model, identify_weights
from misalatch.resources import load_tokenizer
from misalatch.io.atomic import atomic_write_text
from misalatch.io.owned import Output, refuse_links
from misalatch.training.checkpoint import REFERENCED, check_reference, load_weights, read_sidecar, verify_manifest
from misalatch.training.config import TrainConfig
from misalatch.training.loop import SplitEvaluation, eval_shuffle_seed, evaluate
from misalatch.training.setup import SOURCE_ENCODER, RunSetup, check_token_ids, resolve_device, tokenize_once

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# writing a run folder
# ----------------------------------------------------------------------------------------------
def default_out(cfg: TrainConfig) -> Path:
    """``--out``, or ``runs/<data>-<feedback>``."""
    return Path(cfg.out) if cfg.out else Path("runs") / f"{Path(cfg.data).stem}-{cfg.feedback}"


def _history_csv(history: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return buffer.getvalue()


def data_facts(dataset: CanonicalDataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "synthetic": dataset.synthetic,
        "task": dataset.task,
        "alignment": dataset.alignment,
        "split_sizes": dataset.split_sizes(),
        "truncated": dataset.meta.get("truncated", {}),
        "dropped": dataset.meta.get("dropped", {}),
        "nonfinite": dataset.meta.get("nonfinite", {}),
        # features extracted by `misalatch extract`: the recipe and normalisation that predict --media re-applies
        **({"media": dataset.meta["media"]} if isinstance(dataset.meta.get("media"), dict) else {}),
    }


def save_text_assets(setup: RunSetup, output: Output, sub: str = "") -> None:
    """The tokenizer folder (swapped in whole) or vocab.json, so the run reloads offline."""
    if setup.text.tokenizer is not None:
        with output.directory(sub + "tokenizer") as folder:
            setup.text.tokenizer.save_pretrained(str(folder))
    if setup.dataset.vocab is not None:
        output.write_text(sub + "vocab.json", json.dumps(setup.dataset.vocab))


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def write_run_config(output: Output, sub: str, setup: RunSetup, resolved: TrainConfig) -> None:
    """config.yaml: the resolved flags, then what they resolved to (text encoder, model, data facts)."""
    config_yaml = resolved.to_yaml() + "resolved:\n" + _indent(
        json.dumps({"text_encoder": setup.text.description, "model": setup.model_config.to_dict(),
                    "data": data_facts(setup.dataset)}, indent=2, default=str))
    output.write_text(sub + "config.yaml", config_yaml)


def write_history_csv(output: Output, sub: str, history: list[dict[str, Any]]) -> None:
    output.write_text(sub + "history.csv", _history_csv(history))


def write_history(output: Output, sub: str, history: list[dict[str, Any]]) -> None:
    """history.csv (one row per epoch) and its plot curves.png."""
    write_history_csv(output, sub, history)
    plot_history(output.path / sub / "history.csv", output.file(sub + "curves.png"))


def write_prediction_plots(output: Output, sub: str, test: SplitEvaluation, task: str) -> None:
    """scatter-test.png (regression) and confusion-test.png: the test split's predictions against its labels."""
    for name, png in prediction_pngs(test.predictions, test.labels, task=task, split="test").items():
        output.write_bytes(sub + name, png)


def write_metrics(output: Output, sub: str, metrics: dict[str, Any]) -> None:
    output.write_text(sub + "metrics.json", json.dumps(metrics, indent=2, allow_nan=True))


def dev_record(row: dict[str, Any]) -> dict[str, Any]:
    """The validation metrics of one history row, as the checkpoint sidecar stores them."""
    return {"validation": {k[4:]: v for k, v in row.items() if k.startswith("dev_") and k != "dev_loss"},
            "dev_loss": row["dev_loss"]}


# ----------------------------------------------------------------------------------------------
# loading a saved run
# ----------------------------------------------------------------------------------------------
@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    model: torch.nn.Module  # the run's registered model (LoadedRun.model_name), eval mode, best weights
    dataset: CanonicalDataset  # text prepared with the run's own tokenizer / vocabulary
    spec: BatchSpec
    device: torch.device
    sidecar: dict[str, Any]

    @property
    def model_name(self) -> str:
        return self.config.model


def check_weights_hold(path: Path, spec: ModelSpec) -> None:
    """Refuse weights of another registered model before loading them (a clear error, not a key list)."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    held = identify_weights(keys)
    if held is not None and held != spec.name:
        raise CheckpointError(f"{path}: holds the weights of a {held!r} model, but the run records the model "
                              f"{spec.name!r}; a {held!r} checkpoint cannot be loaded as {spec.name!r}")


RUN_FILES = ("best.json", "best.manifest.json", "best.safetensors", "vocab.json", "tokenizer/", "metrics.json",
             "resume.json", "resume.manifest.json", "resume.safetensors", "config.yaml", "history.csv")
"""What misalatch reads back from a run folder (``tokenizer/``: the folder and its files)."""


def check_run_links(run_dir: str | Path) -> None:
    """Refuse a run folder whose files are symbolic links: a run folder may come from anyone, and a
    link would make misalatch read (or replace) a file outside it (docs/security.md)."""
    refuse_links(run_dir, RUN_FILES, error=CheckpointError)


def load_run(run_dir: str | Path, *, data: str | None = None, data_root: str | None = None,
             device: str = "auto", trust_unverified: bool = False,
             dataset: CanonicalDataset | None = None) -> LoadedRun:
    """Rebuild a run's best model and its data (or other ``data``, or a ``dataset`` already in memory,
    e.g. clips just extracted by ``predict --media``) prepared the same way.

    The checkpoint set is verified against its manifest before anything in it is read; a run folder
    without one is refused unless ``trust_unverified`` (docs/security.md). Either way every tensor's
    dtype and shape must be those of the model its config builds.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    check_run_links(run_dir)
    verify_manifest(run_dir, "best", trust_unverified=trust_unverified)
    sidecar = read_sidecar(run_dir, "best")
    try:
        cfg = TrainConfig.from_dict(sidecar["config"], source=f"{run_dir / 'best.json'}: config")
        spec = get_model(str(sidecar.get("model", cfg.model)))  # runs before the registry recorded "misa"
    except MisalatchError as err:
        raise CheckpointError(f"{run_dir / 'best.json'}: {err}" if "best.json" not in str(err) else str(err)) from err
    try:
        model_config = spec.config_from_dict(sidecar["model_config"])
    except (MisalatchError, TypeError) as err:
        raise CheckpointError(f"{run_dir / 'best.json'}: model_config is not a {spec.name!r} config ({err})") from err
    if data is not None or data_root is not None:
        cfg = cfg.replace(data=data or cfg.data, data_root=data_root or cfg.data_root)
    if dataset is None:
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
        dataset = apply_vocab(dataset, read_vocab_file(vocab_file))
    check_token_ids(dataset, model_config, source=f"--data {cfg.data}")
    dev = resolve_device(device)
    check_weights_hold(run_dir / "best.safetensors", spec)
    reference = check_reference(sidecar.get(REFERENCED), run_dir / "best.json")
    bert = _referenced_encoder(reference, run_dir) if reference is not None else None
    try:
        model = spec.build(model_config, bert=bert)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{run_dir / 'best.json'}: model_config cannot build a model ({err})") from err
    load_weights(run_dir, "best", model, verify=False, reference=reference)  # verified above, before the sidecar
    model.to(dev).eval()
    spec = BatchSpec(text_encoder=model_config.text_encoder, modalities=cfg.modalities, alignment=dataset.alignment,
                     task=dataset.task, visual_dim=model_config.visual_size, acoustic_dim=model_config.acoustic_size)
    if dataset.visual_dim not in (None, model_config.visual_size) or dataset.acoustic_dim not in (None, model_config.acoustic_size):
        raise MisalatchError(
            f"--data {cfg.data}: feature sizes (visual {dataset.visual_dim}, acoustic {dataset.acoustic_dim}) do not "
            f"match the run's model (visual {model_config.visual_size}, acoustic {model_config.acoustic_size})"
        )
    return LoadedRun(run_dir, cfg, model, dataset, spec, dev, sidecar)


def _referenced_encoder(reference: dict[str, Any], run_dir: Path) -> torch.nn.Module:
    """The installed pretrained encoder whose frozen weights the run references (not copied into it)."""
    from misalatch.models.encoders import build_bert
    from misalatch.resources import resolve_text_encoder

    try:
        encoder = resolve_text_encoder(reference["encoder"])
    except MisalatchError as err:
        raise ResourceNotFoundError(f"{run_dir / 'best.json'}: the run references the frozen weights of text encoder "
                                    f"{reference['encoder']!r}, which is not available here ({err})") from err
    if encoder.kind != "bert" or encoder.path is None:
        raise CheckpointError(f"{run_dir / 'best.json'}: referenced text encoder {reference['encoder']!r} is not a "
                              "BERT model")
    return build_bert(path=str(encoder.path))
def final_shuffle_seed(cfg: TrainConfig, seed: int, split: str) -> int | None:
    """The batches of a run's final evaluation of ``split``: shuffled and seeded under ``--length-quirk``
    (predictions depend on their batch mates there), so ``misalatch evaluate`` meets the batches the
    run was scored with; None (length-sorted, batch-independent) otherwise."""
    return eval_shuffle_seed(seed, 0, split) if cfg.length_quirk else None


def evaluate_run(run: LoadedRun, splits: tuple[str, ...] = ("valid", "test")) -> dict[str, SplitEvaluation]:
    """Score a loaded run (``load_run``) on ``splits`` with the batches, batch size and loss reduction it
    was scored with at the end of training, so the metrics match its ``metrics.json``; split name →
    evaluation (``.metrics``, ``.loss``, predictions and labels)."""
    return {
        split: evaluate(run.model, run.dataset.splits[split], run.spec, batch_size=run.config.batch_size or 32,
                        device=run.device, reduction=run.config.dev_loss_reduction,
                        shuffle_seed=final_shuffle_seed(run.config, run.config.seed, split))
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
