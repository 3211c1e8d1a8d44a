"""Do the feedback variants take off before early stopping gives up on them?

The task (SYNTHETIC, made here): visual features have two groups of 4 dimensions, A and B. In every
segment one group carries the label's signal (a per-segment value z, constant over time, plus small
noise) and the other an independent value of the same size, so that vision alone cannot tell which
is which. The TEXT says which group to trust: text dimension 0 is −1 (A) or +1 (B) at every word;
the other text dimensions and the acoustic stream are noise. The label is 1.5·z clipped to [-3, 3].
A model that learns to gate vision with the text cue (the feedback masks of MMLatch) predicts the
label; one that does not can only average the two groups (test MAE of plain MISA). The auxiliary MISA
losses are off (weights 0), as in tests/models/test_feedback_mechanism.py: at this scale the
difference loss dominates the gradient and nothing is learned in a few hundred steps.

``python benchmarks/feedback_takeoff.py --out bench/takeoff`` prepares the data and runs the sweep
``feedback × warmup_epochs × seeds`` at patience 5 with ``misalatch sweep``; the table is
``bench/takeoff/sweep/results.md``. docs/experiments.md reports the numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from misalatch.data.cache import save_prepared
from misalatch.data.canonical import CanonicalDataset, Segment

D_T, D_A, D_V = 4, 4, 8
GROUPS = (slice(0, 4), slice(4, 8))


def make_cue_task(sizes: tuple[int, int, int] = (480, 120, 120), seed: int = 0, steps: tuple[int, int] = (4, 6)) -> CanonicalDataset:
    """The text-cue / two-visual-groups task as a canonical dataset (text given as word vectors)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        segs = []
        for i in range(n):
            t = int(rng.integers(steps[0], steps[1] + 1))
            cue = int(rng.integers(0, 2))
            z, other = rng.normal(), rng.normal()
            visual = 0.3 * rng.normal(size=(t, D_V))
            visual[:, GROUPS[cue]] += 1.5 * z
            visual[:, GROUPS[1 - cue]] += 1.5 * other
            text = rng.normal(size=(t, D_T))
            text[:, 0] = 2.0 * cue - 1.0
            acoustic = rng.normal(size=(t, D_A))
            segs.append(Segment(id=f"{split}-{i}", label=float(np.clip(1.5 * z, -3, 3)),
                                text_vectors=text.astype(np.float32), visual=visual.astype(np.float32),
                                acoustic=acoustic.astype(np.float32)))
        splits[split] = segs
    return CanonicalDataset(name="synthetic-cue-gating", task="regression", splits=splits, synthetic=True,
                            meta={"generator": "benchmarks/feedback_takeoff.py", "seed": seed})


def main() -> None:
    from misalatch.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench/takeoff")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--feedback", default="static,sequence-mlp,sequence,static-projected,none")
    parser.add_argument("--warmup", default="0,10")
    parser.add_argument("--max-epochs", default="40")
    parser.add_argument("--join", action="store_true", help="join the sweep as one more worker")
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not data.exists():
        save_prepared(make_cue_task(), data)
    if args.join:
        raise SystemExit(cli(["sweep", "--join", "--storage", f"sqlite:///{(out / 'sweep').resolve()}/study.db",
                              "--study", "sweep-sweep"]))
    raise SystemExit(cli(["sweep", "--out", str(out / "sweep"), "--data", str(data), "--text-encoder", "vectors",
                          "--feedback", args.feedback, "--warmup-epochs", args.warmup, "--seeds", args.seeds,
                          "--patience", "5", "--max-epochs", args.max_epochs, "--hidden-size", "16",
                          "--batch-size", "32", "--lr", "3e-3", "--diff-weight", "0", "--sim-weight", "0",
                          "--recon-weight", "0", "--device", "cpu"]))


if __name__ == "__main__":
    main()
