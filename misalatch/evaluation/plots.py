"""Training curves of a run (history.csv → PNG), for a figure you can show."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_history(history_csv: str | Path, out_png: str | Path) -> Path:
    """Two panels: training losses by term and the dev task loss; the main dev metrics per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
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
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    from misalatch.io.atomic import atomic_savefig

    out_png = Path(out_png)
    atomic_savefig(fig, out_png, dpi=120)  # a kill never leaves a 0-byte curves.png
    plt.close(fig)
    return out_png
