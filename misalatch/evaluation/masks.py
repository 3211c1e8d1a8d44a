"""Inspecting MMLatch feedback masks: collect them from a model, export arrays, plots and statistics.

``collect_masks`` runs a feedback model in evaluation mode (no mask dropout, no gradients) over
batches and keeps, per sample, each modality's mask at its valid steps:

* visual / acoustic: ``(L_m, d_m)`` — the sample's own steps of that modality;
* text, sLSTM paths (GloVe / vectors): ``(L, d_e)`` — one row per word;
* text, BERT: ``(n_content, d_b)`` — one row per content wordpiece (``[CLS]``, ``[SEP]`` and padding
  always have mask 1 and are left out; on word-aligned data the wordpieces of a word share its mask).

``export_masks`` writes into a folder:

* ``masks.npz`` (``allow_pickle=False``): ``ids`` (unicode), ``labels`` (float64), ``task``,
  ``feedback``, and per modality ``<m>`` (all samples' rows concatenated, float32), ``<m>_offsets``
  ``(N + 1,)`` and ``<m>_lengths`` ``(N,)`` (sample i is ``<m>[offsets[i]:offsets[i + 1]]``) and
  ``<m>_mean_per_feature`` ``(d_m,)``;
* ``heatmaps/sample-<k>-<id>.png``: feature × time heatmaps of the chosen samples, one panel per modality;
* ``mean_mask.png``: the mean mask per feature, one panel per modality;
* ``summary.json``: per modality the mean, std, min, max, the Gini coefficient of all mask values
  (``gini``) and of the per-feature means (``gini_features``), and mean masks per label class.

Label classes: for classification the class index; for regression the sign of the label
(``negative`` < 0, ``zero`` = 0, ``positive`` > 0) and, separately, the label rounded to the nearest
integer after clipping to [-3, 3] (``-3`` … ``3``, the Acc-7 classes). A class mean is the mean of every
mask value of that class's samples (pooled over steps and features).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Protocol, Sequence

import numpy as np
import torch

from misalatch.errors import ConfigError, MisalatchError
from misalatch.io.atomic import atomic_open, atomic_savefig, atomic_write_json
from misalatch.models.outputs import FeedbackMasks, ModelInputs

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("text", "visual", "acoustic")
CLASS_RULES = {
    "sign": "regression: label < 0 (negative), = 0 (zero), > 0 (positive)",
    "rounded": "regression: round(clip(label, -3, 3)), the Acc-7 classes",
    "class": "classification: class index",
}


class BatchLike(Protocol):
    inputs: ModelInputs
    labels: torch.Tensor
    ids: list[str]


@dataclass
class CollectedMasks:
    """Evaluation masks of a split, per sample at its valid steps (see the module docstring)."""

    ids: list[str]
    labels: np.ndarray  # (N,) float64: regression score or class index
    task: str  # regression | classification
    feedback: str
    masks: dict[str, list[np.ndarray]]  # modality -> per sample (L_i, d_m) float32
    time_axis: dict[str, str] = field(default_factory=dict)  # what one row of each modality is

    def __len__(self) -> int:
        return len(self.ids)


def _time_axes(text_layout: str, alignment: str) -> dict[str, str]:
    if text_layout == "wordpiece":
        text = "content wordpiece ([CLS]/[SEP] left out)"
    else:
        text = "word" if alignment == "word" else "text step"
    return {"text": text, "visual": "visual step", "acoustic": "acoustic step"}


def per_sample_masks(masks: FeedbackMasks, inputs: ModelInputs) -> dict[str, list[np.ndarray]]:
    """Slice a batch's masks into per-sample ``(L, d)`` arrays at the valid steps."""
    out: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    batch = inputs.batch_size
    visual = masks.visual.detach().float().cpu()
    acoustic = masks.acoustic.detach().float().cpu()
    text = masks.text.detach().float().cpu()
    # time-first text masks: one row per text step; 0 beyond a sample's steps (token-aligned BERT: its positions)
    text_steps = inputs.lengths if masks.text_lengths is None else masks.text_lengths
    per_wordpiece = masks.text_layout == "wordpiece"
    if per_wordpiece:
        from misalatch.models.feedback import content_positions

        assert inputs.bert_attention_mask is not None
        content = content_positions(inputs.bert_attention_mask.cpu())
    for b in range(batch):
        out["visual"].append(visual[: int(inputs.visual_lengths[b]), b].numpy())
        out["acoustic"].append(acoustic[: int(inputs.acoustic_lengths[b]), b].numpy())
        if per_wordpiece:
            out["text"].append(text[b][content[b]].numpy())
        else:
            out["text"].append(text[: int(text_steps[b]), b].numpy())
    return out


def collect_masks(model: torch.nn.Module, batches: Iterable[BatchLike], *,
                  device: torch.device | str | None = None) -> CollectedMasks:
    """Run ``model`` (any registered model whose config ``has_masks``) in eval mode without gradients
    and keep every sample's masks.

    ``batches`` yields objects with ``.inputs`` (``ModelInputs``), ``.labels`` and ``.ids``
    (e.g. ``misalatch.data.batching.Batch``). The model's train/eval mode is restored afterwards.
    """
    config = getattr(model, "config", None)
    if config is None or not config.has_masks:
        variant = getattr(config, "variant", type(model).__name__)
        raise MisalatchError(f"the model ({variant}) has no feedback, so there are no masks to export; train "
                             "--model misa with --feedback sequence, sequence-mlp, static or static-projected, "
                             "or --model mmlatch with its feedback on")
    feedback = config.variant
    layout, alignment = "time_first", "word"
    was_training = model.training
    model.eval()
    ids: list[str] = []
    labels: list[np.ndarray] = []
    masks: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    task = "regression"
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = batch.inputs if device is None else batch.inputs.to(device)
                out = model(inputs)
                assert out.masks is not None
                layout, alignment = out.masks.text_layout, inputs.alignment
                for m, arrays in per_sample_masks(out.masks, inputs).items():
                    masks[m].extend(arrays)
                ids.extend(batch.ids)
                lab = batch.labels.detach().cpu()
                if lab.dtype in (torch.int64, torch.int32) and lab.dim() == 1:
                    task = "classification"
                labels.append(lab.reshape(-1).to(torch.float64).numpy())
    finally:
        model.train(was_training)
    label_array = np.concatenate(labels) if labels else np.zeros(0, dtype=np.float64)
    return CollectedMasks(ids, label_array, task, feedback, masks, _time_axes(layout, alignment))


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, → 1 = all mass on one value."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n, total = x.size, float(x.sum()) if x.size else 0.0
    if n == 0 or total <= 0.0:
        return 0.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * ranks - n - 1.0) * x) / (n * total))


def label_classes(labels: np.ndarray, task: str) -> dict[str, dict[str, np.ndarray]]:
    """Sample index sets per class rule: ``sign`` and ``rounded`` (regression) or ``class``."""
    labels = np.asarray(labels, dtype=np.float64)
    if task == "classification":
        return {"class": {str(int(c)): np.flatnonzero(labels == c) for c in np.unique(labels)}}
    sign = {"negative": np.flatnonzero(labels < 0), "zero": np.flatnonzero(labels == 0),
            "positive": np.flatnonzero(labels > 0)}
    rounded = np.rint(np.clip(labels, -3.0, 3.0)).astype(int)
    per_round = {str(r): np.flatnonzero(rounded == r) for r in range(-3, 4)}
    return {"sign": sign, "rounded": per_round}


def _stack(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    return np.concatenate(arrays, axis=0) if arrays else np.zeros((0, width), dtype=np.float32)


def _width(arrays: Sequence[np.ndarray]) -> int:
    return int(arrays[0].shape[1]) if arrays else 0


def summarize(collected: CollectedMasks) -> dict[str, Any]:
    """The statistics of ``summary.json`` (plain JSON types)."""
    classes = label_classes(collected.labels, collected.task)
    summary: dict[str, Any] = {
        "feedback": collected.feedback,
        "n_samples": len(collected),
        "task": collected.task,
        "class_rules": {rule: CLASS_RULES[rule] for rule in classes},
        "modalities": {},
    }
    for m in MODALITIES:
        arrays = collected.masks[m]
        values = _stack(arrays, _width(arrays))
        per_feature = values.mean(axis=0) if values.size else np.zeros(values.shape[1])
        stats: dict[str, Any] = {
            "time_axis": collected.time_axis.get(m, ""),
            "feature_dim": int(values.shape[1]),
            "n_rows": int(values.shape[0]),
            "mean": float(values.mean()) if values.size else float("nan"),
            "std": float(values.std()) if values.size else float("nan"),
            "min": float(values.min()) if values.size else float("nan"),
            "max": float(values.max()) if values.size else float("nan"),
            "gini": gini(values),
            "gini_features": gini(per_feature),
        }
        for rule, groups in classes.items():
            stats[f"per_class_{rule}"] = {}
            for name, idx in groups.items():
                rows = [arrays[i] for i in idx if arrays[i].size]
                mean = float(np.mean(np.concatenate(rows))) if rows else None
                stats[f"per_class_{rule}"][name] = {"n_samples": int(len(idx)), "mean": mean}
        summary["modalities"][m] = stats
    return summary


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "sample"


def _choose(collected: CollectedMasks, samples: int | Sequence[str]) -> list[int]:
    if isinstance(samples, int):
        if samples < 0:
            raise ConfigError(f"samples must be >= 0, got {samples}")
        return list(range(min(samples, len(collected))))
    index = {sid: i for i, sid in enumerate(collected.ids)}
    missing = [s for s in samples if s not in index]
    if missing:
        raise ConfigError(f"segment ids not in this split: {', '.join(map(repr, missing[:5]))}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return [index[s] for s in samples]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global state
    return fig


def _save(fig: Any, target: Path | BinaryIO) -> None:
    """A PNG into a file (atomically) or into an open binary stream (the HTML report embeds it)."""
    if hasattr(target, "write"):
        fig.savefig(target, format="png", dpi=100)
    else:
        atomic_savefig(fig, target, dpi=100)


def plot_heatmap(collected: CollectedMasks, index: int, path: Path | BinaryIO) -> None:
    """Feature × time heatmaps of one sample's masks (colour scale 0–1), one panel per modality."""
    fig = _new_figure(9.0, 8.0)
    axes = fig.subplots(len(MODALITIES), 1)
    for ax, m in zip(axes, MODALITIES):
        arr = collected.masks[m][index]  # (L, d)
        image = ax.imshow(arr.T, aspect="auto", origin="lower", interpolation="nearest", vmin=0.0, vmax=1.0,
                          cmap="viridis")
        ax.set_title(f"{m} mask ({arr.shape[0]} × {arr.shape[1]})", fontsize=9)
        ax.set_xlabel(collected.time_axis.get(m, "step"), fontsize=8)
        ax.set_ylabel("feature", fontsize=8)
        fig.colorbar(image, ax=ax)
    label = collected.labels[index] if index < len(collected.labels) else float("nan")
    # parse_math=False: ids such as "vid$_$clip" must not be read as mathtext
    fig.suptitle(f"{collected.feedback} masks, segment {collected.ids[index]} (label {label:g})", fontsize=10,
                 parse_math=False)
    _save(fig, path)


def plot_mean_mask(collected: CollectedMasks, path: Path | BinaryIO) -> None:
    """Mean mask per feature (over every valid step of every sample), one panel per modality."""
    fig = _new_figure(9.0, 7.0)
    axes = fig.subplots(len(MODALITIES), 1)
    for ax, m in zip(axes, MODALITIES):
        arrays = collected.masks[m]
        values = _stack(arrays, _width(arrays))
        if values.size:
            mean = values.mean(axis=0)
            ax.bar(np.arange(mean.size), mean, width=1.0, color="tab:blue")
            ax.axhline(float(values.mean()), color="tab:red", lw=1, label=f"overall mean {values.mean():.3f}")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"{m}: mean mask per feature", fontsize=9)
        ax.set_xlabel("feature", fontsize=8)
    fig.suptitle(f"{collected.feedback} masks, {len(collected)} samples", fontsize=10)
    _save(fig, path)


def export_masks(collected: CollectedMasks, out_dir: str | Path, *, samples: int | Sequence[str] = 4,
                 meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``masks.npz``, heatmaps, ``mean_mask.png`` and ``summary.json`` into ``out_dir``.

    Args:
        samples: heatmaps for the first ``samples`` samples, or for these segment ids.
        meta: extra facts for ``summary.json`` (run folder, split, data, …).

    Returns:
        name → path of everything written (``heatmap:<id>`` for each heatmap).
    """
    out = Path(out_dir)
    chosen = _choose(collected, samples)
    (out / "heatmaps").mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(collected.ids, dtype=str),
        "labels": np.asarray(collected.labels, dtype=np.float64),
        "task": np.asarray(collected.task),
        "feedback": np.asarray(collected.feedback),
    }
    for m in MODALITIES:
        per = collected.masks[m]
        lengths = np.asarray([a.shape[0] for a in per], dtype=np.int64)
        values = _stack(per, _width(per)).astype(np.float32)
        arrays[m] = values
        arrays[f"{m}_lengths"] = lengths
        arrays[f"{m}_offsets"] = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        arrays[f"{m}_mean_per_feature"] = values.mean(axis=0) if values.size else np.zeros(values.shape[1], np.float32)
    written["npz"] = out / "masks.npz"
    with atomic_open(written["npz"], "wb") as handle:
        np.savez_compressed(handle, allow_pickle=False, **arrays)

    for k in chosen:
        path = out / "heatmaps" / f"sample-{k:05d}-{_safe(collected.ids[k])}.png"
        plot_heatmap(collected, k, path)
        written[f"heatmap:{collected.ids[k]}"] = path
    written["mean_mask"] = out / "mean_mask.png"
    plot_mean_mask(collected, written["mean_mask"])

    summary = {**(meta or {}), **summarize(collected), "heatmap_ids": [collected.ids[k] for k in chosen]}
    written["summary"] = out / "summary.json"
    atomic_write_json(written["summary"], summary, allow_nan=True)
    # debug only: ``out`` is often a staging folder swapped into place by the caller, which names the final path
    log.debug("masks of %d samples written to %s", len(collected), out)
    return written
