"""Do the feedback variants take off under MISA's full objective with the default schedule?

The task (SYNTHETIC, made here): visual features have two groups of 4 dimensions, A and B. In every
segment one group carries the label's signal (a per-segment value z, constant over time, plus small
noise) and the other an independent value of the same distribution, so vision alone cannot tell
which is which. The TEXT says which group to trust: text dimension 0 is −1 (A) or +1 (B) at every
word; the other text dimensions and the acoustic stream are noise. The label is 1.5·z clipped to
[-3, 3]. A model that gates vision with the text cue predicts the label; one that does not can only
read the average of the two groups (test MAE ≈ 0.85, the best such predictor; a constant ≈ 1.2).

Every run uses MISA's full objective (difference, CMD similarity and reconstruction losses at their
default weights 0.3 / 1.0 / 1.0) and the default early stopping (patience 6, feedback warm-up 10)
and mask learning-rate factor (10 for feedback variants); only the sizes and the learning rate are
set for the task (hidden 32, batch 32, lr 1e-3, at most 40 epochs). Plain MISA (``none``) learns
only the average of the groups within this budget.

``python benchmarks/feedback_takeoff.py --out bench/takeoff`` prepares the data, runs the sweep
``feedback × seeds`` with ``misalatch sweep`` (``--workers 2`` runs two worker processes), runs the
shuffled-cue controls (the cue is drawn independently of the informative group: a mask that follows
the cue then selects nothing), and writes ``bench/takeoff/takeoff.md`` / ``takeoff.json``: per run
the epochs run, best epoch, test MAE and the **mask selectivity** — the mean visual mask on the group
the cue names minus the mean on the other group, over valid test steps, averaged over the two cue
values (0 for a constant mask and for any cue-blind preference of one group). Extra flags after
``--`` go to every ``misalatch train`` (e.g. ``-- --mask-lr-factor 1`` for the previous default).
docs/experiments.md reports the numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from misalatch.data.cache import save_prepared
from misalatch.data.canonical import CanonicalDataset, Segment

D_T, D_A, D_V = 4, 4, 8
GROUPS = (slice(0, 4), slice(4, 8))
VARIANTS = ("sequence", "sequence-mlp", "static", "static-projected")
TRAIN_FLAGS = ("--text-encoder", "vectors", "--hidden-size", "32", "--batch-size", "32", "--lr", "1e-3",
               "--device", "cpu")


def make_cue_task(sizes: tuple[int, int, int] = (480, 120, 120), seed: int = 0, steps: tuple[int, int] = (4, 6),
                  shuffled_cue: bool = False) -> CanonicalDataset:
    """The text-cue / two-visual-groups task as a canonical dataset (text given as word vectors).

    ``shuffled_cue``: the text cue is drawn independently of the informative group (the control).
    """
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        segs = []
        for i in range(n):
            t = int(rng.integers(steps[0], steps[1] + 1))
            informative = int(rng.integers(0, 2))
            z, other = rng.normal(), rng.normal()
            visual = 0.3 * rng.normal(size=(t, D_V))
            visual[:, GROUPS[informative]] += 1.5 * z
            visual[:, GROUPS[1 - informative]] += 1.5 * other
            text = rng.normal(size=(t, D_T))
            cue = int(rng.integers(0, 2)) if shuffled_cue else informative
            text[:, 0] = 2.0 * cue - 1.0
            acoustic = rng.normal(size=(t, D_A))
            segs.append(Segment(id=f"{split}-{i}", label=float(np.clip(1.5 * z, -3, 3)),
                                text_vectors=text.astype(np.float32), visual=visual.astype(np.float32),
                                acoustic=acoustic.astype(np.float32)))
        splits[split] = segs
    name = "synthetic-cue-gating" + ("-shuffled" if shuffled_cue else "")
    return CanonicalDataset(name=name, task="regression", splits=splits, synthetic=True,
                            meta={"generator": "benchmarks/feedback_takeoff.py", "seed": seed,
                                  "shuffled_cue": shuffled_cue})


def cue_of(segment: Segment) -> int:
    """The group (0 = A, 1 = B) the segment's text cue names."""
    return int(segment.text_vectors[0, 0] > 0)


def selectivity(visual_masks: list[np.ndarray], cues: np.ndarray) -> float:
    """Mean mask on the cued group − on the other group, per cue value, averaged over the two values."""
    margins = []
    for cue in (0, 1):
        rows = [visual_masks[i] for i in np.flatnonzero(cues == cue)]
        if rows:
            cued = np.mean([r[:, GROUPS[cue]].mean() for r in rows])
            other = np.mean([r[:, GROUPS[1 - cue]].mean() for r in rows])
            margins.append(float(cued - other))
    return float(np.mean(margins)) if margins else float("nan")


def run_summary(run_dir: Path) -> dict:
    """Epochs run, best epoch, test MAE and (feedback runs) the test mask selectivity of one run folder."""
    from misalatch.data.batching import iterate_batches
    from misalatch.evaluation.masks import collect_masks
    from misalatch.training.run_dir import load_run

    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = {"epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
           "test_mae": metrics["test"]["mae"], "selectivity": None}
    run = load_run(run_dir, device="cpu")
    if run.model.config.has_masks:
        segments = run.dataset.splits["test"]
        collected = collect_masks(run.model, iterate_batches(segments, run.spec, 64))
        row["selectivity"] = selectivity(collected.masks["visual"], np.array([cue_of(s) for s in segments]))
    return row


def sweep(out: Path, data: Path, feedback: str, seeds: str, max_epochs: str, workers: int, extra: list[str]) -> None:
    """``misalatch sweep`` over ``feedback × seeds``, in ``workers`` processes on one study."""
    args = ["sweep", "--out", str(out), "--data", str(data), "--feedback", feedback, "--seeds", seeds,
            "--max-epochs", max_epochs, *TRAIN_FLAGS, *extra]
    cmd = [sys.executable, "-m", "misalatch", *args]
    procs = [subprocess.Popen(cmd)]
    for _ in range(workers - 1):
        while not (out / "study.db").exists() and procs[0].poll() is None:
            time.sleep(1)
        procs.append(subprocess.Popen([sys.executable, "-m", "misalatch", "sweep", "--join", "--storage",
                                       f"sqlite:///{out.resolve()}/study.db", "--study", f"sweep-{out.resolve().name}"]))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"sweep {out} failed ({codes})")


def table(runs: dict[str, dict[str, dict]]) -> str:
    lines = ["| variant | seed | epochs run | best epoch | test MAE | selectivity |", "|---|---|---|---|---|---|"]
    for variant, per_seed in runs.items():
        for seed, r in per_seed.items():
            sel = "—" if r["selectivity"] is None else f"{r['selectivity']:.3f}"
            lines.append(f"| `{variant}` | {seed} | {r['epochs_run']} | {r['best_epoch']} | {r['test_mae']:.3f} | {sel} |")
    return "\n".join(lines)


def collect(sweep_dir: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for run_dir in sorted((sweep_dir / "runs").glob("*/seed-*")):
        if (run_dir / "metrics.json").is_file():
            out.setdefault(run_dir.parent.name, {})[run_dir.name.removeprefix("seed-")] = run_summary(run_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/takeoff")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--feedback", default="none," + ",".join(VARIANTS))
    parser.add_argument("--control-seeds", default="1", help="seeds of the shuffled-cue controls ('' skips them)")
    parser.add_argument("--max-epochs", default="40")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="flags for every misalatch train, after --")
    args = parser.parse_args()
    out = Path(args.out)
    for name, shuffled in (("data", False), ("data-shuffled", True)):
        if not (out / name).exists():
            save_prepared(make_cue_task(shuffled_cue=shuffled), out / name)
    sweep(out / "sweep", out / "data", args.feedback, args.seeds, args.max_epochs, args.workers, args.extra)
    controls = [v for v in args.feedback.split(",") if v != "none"]
    if args.control_seeds and controls:
        sweep(out / "control", out / "data-shuffled", ",".join(controls), args.control_seeds, args.max_epochs,
              args.workers, args.extra)
    results = {"task": collect(out / "sweep"), "shuffled_cue": collect(out / "control") if (out / "control").exists() else {}}
    (out / "takeoff.json").write_text(json.dumps(results, indent=1))
    text = "## Cue task\n\n" + table(results["task"]) + "\n\n## Shuffled-cue control\n\n" + table(results["shuffled_cue"]) + "\n"
    (out / "takeoff.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
