"""Figures of a run: training curves (history.csv → PNG) and predictions against labels.

* regression: predicted vs true scatter, and the 7-class confusion matrix of the Acc-7 classes
  ``round(clip(·, -3, 3))`` (its diagonal over its total is exactly ``acc7``);
* classification (UR-FUNNY): the confusion matrix of ``argmax`` of the logits.

Figures are drawn on a private Agg canvas (never pyplot's global state, so a notebook's backend is
left alone) and written atomically: a reader never sees half a PNG. ``figure_png`` returns the
bytes instead, for the HTML report.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.errors import ConfigError

ACC7_CLASSES: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _write_png(fig: Any, path: Path, dpi: int = 110) -> Path:
    from misalatch.io.atomic import atomic_write_bytes
    from misalatch.io.owned import record_written

    record_written(path)  # listed in the run folder's marker (when it has one) before it exists
    return atomic_write_bytes(path, figure_png(fig, dpi))


def plot_history(history_csv: str | Path, out_png: str | Path) -> Path:
    """Two panels: training losses by term and the dev task loss; the main dev metrics per epoch."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return _write_png(history_figure(rows), Path(out_png), dpi=120)


def history_figure(rows: list[dict[str, str]]) -> Any:
    """The figure of ``plot_history`` from the rows of a history.csv."""
    from matplotlib.ticker import MaxNLocator

    epochs = [int(r["epoch"]) for r in rows]
    fig = new_figure(11, 4)
    left, right = fig.subplots(1, 2)
    for key in ("train_total", "train_task", "train_diff", "train_sim", "train_recon", "dev_loss"):
        if rows and key in rows[0]:
            left.plot(epochs, [float(r[key]) for r in rows], marker="o", ms=3, label=key.replace("_", " "),
                      linestyle="--" if key == "dev_loss" else "-")
    best = [e for e, r in zip(epochs, rows) if r.get("improved") == "True"]
    if best:
        left.axvline(best[-1], color="grey", lw=0.8, ls=":", label=f"best epoch {best[-1]}")
    left.set(xlabel="epoch", ylabel="loss", title="losses")
    left.legend(fontsize=8)
    for key in ("dev_acc2_non0", "dev_f1_non0", "dev_acc7", "dev_corr", "dev_acc", "dev_f1"):
        if rows and key in rows[0]:
            right.plot(epochs, [float(r[key]) for r in rows], marker="o", ms=3, label=key[4:])
    right.set(xlabel="epoch", ylabel="value", title="validation metrics", ylim=(-0.05, 1.0))
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# ----------------------------------------------------------------------------------------------
# predictions against labels
# ----------------------------------------------------------------------------------------------
def acc7_classes(values: np.ndarray) -> np.ndarray:
    """The Acc-7 class of each score: ``round(clip(v, -3, 3))`` (half to even, as ``acc7``)."""
    return np.round(np.clip(np.asarray(values, dtype=np.float64), -3.0, 3.0)).astype(np.int64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: tuple[int, ...] | int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class.

    ``classes`` is the class values in order, or a count ``C`` for the classes ``0 … C-1``.
    """
    values = tuple(range(classes)) if isinstance(classes, int) else tuple(classes)
    index = {c: i for i, c in enumerate(values)}
    true, predicted = np.asarray(true).reshape(-1), np.asarray(predicted).reshape(-1)
    if true.shape != predicted.shape:
        raise ConfigError(f"confusion matrix: {true.size} labels but {predicted.size} predictions")
    counts = np.zeros((len(values), len(values)), dtype=np.int64)
    for t, p in zip(true.tolist(), predicted.tolist()):
        if t not in index or p not in index:
            raise ConfigError(f"confusion matrix: class {t if t not in index else p!r} is not one of {values}")
        counts[index[t], index[p]] += 1
    return counts


def _draw_confusion(ax: Any, counts: np.ndarray, names: list[str], title: str) -> None:
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    peak = counts.max() if counts.size else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if peak and counts[i, j] > 0.6 * peak else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def scatter_figure(predictions: np.ndarray, labels: np.ndarray, *, title: str = "") -> Any:
    """Predicted vs true scores, with the identity line and the [-3, 3] label range."""
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    fig = new_figure(5, 4.6)
    ax = fig.subplots()
    ax.scatter(y, p, s=10, alpha=0.55, color="tab:blue", edgecolors="none")
    low = float(min(-3.0, np.min(p, initial=-3.0)))
    high = float(max(3.0, np.max(p, initial=3.0)))
    ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--", label="prediction = label")
    mae = float(np.mean(np.abs(p - y))) if p.size else float("nan")
    ax.set(xlabel="true score", ylabel="predicted score", xlim=(low, high), ylim=(low, high))
    ax.set_title(f"{title} (n={p.size}, MAE {mae:.3f})" if title else f"n={p.size}, MAE {mae:.3f}",
                 fontsize=9, parse_math=False)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def confusion_figure(counts: np.ndarray, names: list[str], *, title: str = "") -> Any:
    fig = new_figure(5.2, 4.6)
    total = int(counts.sum())
    accuracy = float(np.trace(counts)) / total if total else float("nan")
    _draw_confusion(fig.subplots(), counts, names, f"{title} (accuracy {100 * accuracy:.2f} %)")
    return fig


def prediction_figures(predictions: np.ndarray, labels: np.ndarray, *, task: str,
                       title: str = "") -> dict[str, Any]:
    """``{"scatter": fig, "confusion": fig}`` (regression) or ``{"confusion": fig}`` (classification).

    Regression: ``predictions`` (N,) raw scores; classification: (N, C) logits or (N,) class ids.
    """
    if task == "regression":
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        counts = confusion_matrix(acc7_classes(y), acc7_classes(predictions), ACC7_CLASSES)
        return {"scatter": scatter_figure(predictions, y, title=title),
                "confusion": confusion_figure(counts, [str(c) for c in ACC7_CLASSES], title=f"{title} Acc-7".strip())}
    if task == "classification":
        p = np.asarray(predictions)
        n_classes = p.shape[1] if p.ndim == 2 else int(max(p.max(initial=0), np.max(labels, initial=0))) + 1
        classes = np.argmax(p, axis=1) if p.ndim == 2 else p.astype(np.int64)
        counts = confusion_matrix(np.asarray(labels).astype(np.int64), classes, n_classes)
        return {"confusion": confusion_figure(counts, [str(c) for c in range(n_classes)], title=title)}
    raise ConfigError(f"unknown task {task!r}; expected regression or classification")


def prediction_pngs(predictions: np.ndarray, labels: np.ndarray, *, task: str, split: str = "test",
                    prefix: str = "") -> dict[str, bytes]:
    """``{"<prefix>scatter-<split>.png": png, "<prefix>confusion-<split>.png": png}`` (no scatter for
    classification), for a writer that places files itself (e.g. an owned output folder)."""
    figures = prediction_figures(predictions, labels, task=task, title=split)
    return {f"{prefix}{name}-{split}.png": figure_png(fig) for name, fig in figures.items()}


def plot_predictions(predictions: np.ndarray, labels: np.ndarray, out_dir: str | Path, *, task: str,
                     split: str = "test", prefix: str = "") -> dict[str, Path]:
    """Write ``<prefix>scatter-<split>.png`` (regression) and ``<prefix>confusion-<split>.png`` into
    ``out_dir``; returns ``{"scatter": path, "confusion": path}``."""
    from misalatch.io.atomic import atomic_write_bytes
    from misalatch.io.owned import record_written

    out = Path(out_dir)
    written = {}
    for name, png in prediction_pngs(predictions, labels, task=task, split=split, prefix=prefix).items():
        record_written(out / name)
        written[name[len(prefix):].split("-")[0]] = atomic_write_bytes(out / name, png)
    return written
