"""Size of a finished run folder per text encoder (docs/reliability.md, "Run folder size").

Trains one short run per encoder on the built-in synthetic data (the demo's data, fewer segments:
the weights do not depend on the number of segments, only the vocabulary does) and prints the
folder's size, the checkpoint's share, and the resume state a run holds while it is in progress
(removed when it completes unless --keep-resume-state).

    python benchmarks/run_folder_size.py [--out /tmp/sizes]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ENCODERS = {
    "glove (GloVe 6B 50-d, trained)": ["--text-encoder", "glove"],
    "learned (word embedding from scratch)": ["--text-encoder", "learned"],
    "MiniLM, frozen (--bert-freeze all)": ["--text-encoder", "minilm", "--bert-freeze", "all"],
    "MiniLM, fine-tuned (--bert-freeze none)": ["--text-encoder", "minilm", "--bert-freeze", "none"],
}
COMMON = ["--synthetic-size", "64", "32", "32", "--max-epochs", "1", "--device", "cpu", "--keep-resume-state"]


def _mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


def main() -> None:
    from misalatch.cli import main as cli_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="misalatch-sizes-"))
    print("| text encoder | run folder (finished) | of it best.safetensors | resume state while running |")
    print("|---|---|---|---|")
    for label, flags in ENCODERS.items():
        out = root / label.split(" ")[0].lower().replace(",", "") / ("frozen" if "frozen" in label else "run")
        if cli_main(["-q", "train", *COMMON, *flags, "--out", str(out)]) != 0:
            print(f"| {label} | failed | | |")
            continue
        files = [p for p in out.rglob("*") if p.is_file()]
        resume = [p for p in files if p.name.startswith("resume.")]
        finished = [p for p in files if p not in resume]
        print(f"| {label} | {_mb(finished):.1f} MB | {_mb([out / 'best.safetensors']):.1f} MB | {_mb(resume):.1f} MB |")


if __name__ == "__main__":
    main()
