"""``misalatch evaluate RUN_DIR``: re-evaluate a saved run and write its metrics as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags


@dataclass(frozen=True)
class EvaluateArgs(ThreadsFlag):
    """Re-evaluate a saved run on its validation and test splits (or on other data)."""

    run_dir: tyro.conf.Positional[str]
    """The run folder written by misalatch train (with several seeds: one of its seed-<s>/ folders)."""
    data: Optional[str] = None
    """Other data prepared the same way (default: the run's own --data)."""
    data_root: Optional[str] = None
    """Where mosi|mosei|ur_funny live (default: the run's own, else MISALATCH_DATA)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when available."""
    out: Optional[str] = None
    """Where to write the metrics JSON (default: RUN_DIR/evaluation.json)."""
    plots: bool = True
    """Write <out-stem>-scatter-<split>.png and <out-stem>-confusion-<split>.png into RUN_DIR."""
    overwrite: bool = False
    """Replace an existing --out file misalatch wrote."""
    trust_unverified: bool = False
    """Load a run folder whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""


def _is_evaluation_json(path: Path) -> bool:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return isinstance(doc, dict) and {"data", "synthetic"} <= set(doc)


def main(argv: list[str]) -> int:
    args = parse_flags(EvaluateArgs, argv, prog="misalatch evaluate")
    from misalatch.evaluation.report import format_metrics_table
    from misalatch.io.atomic import atomic_write_text
    from misalatch.io.owned import check_file_target, record_written, refuse_links
    from misalatch.training.run_dir import evaluate_run, load_run

    apply_threads(args.threads)
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    check_file_target(out, overwrite=args.overwrite or args.out is None, looks_ours=_is_evaluation_json)
    if args.plots:  # the plots go into RUN_DIR: refuse a link there now, not after evaluation.json is written
        refuse_links(args.run_dir, [f"{out.stem}-{kind}-{split}.png" for kind in ("scatter", "confusion")
                                    for split in ("valid", "test")])
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device,
                   trust_unverified=args.trust_unverified)
    results = evaluate_run(run)
    task = run.dataset.task
    payload = {"data": run.config.data, "synthetic": run.dataset.synthetic}
    for split, ev in results.items():
        payload[split] = ev.metrics
        print(f"{split}{' [SYNTHETIC data]' if run.dataset.synthetic else ''} (loss {ev.loss:.4f}):")
        print(format_metrics_table(ev.metrics, task=task))
    record_written(out)  # inside a run folder: recorded in its marker first, so --overwrite knows it is ours
    atomic_write_text(out, json.dumps(payload, indent=2))
    print(f"written: {out}")
    if args.plots:
        from misalatch.evaluation.plots import plot_predictions

        # into the run folder (misalatch's own), named after the evaluation file, never next to a user's --out
        for split, ev in results.items():
            written = plot_predictions(ev.predictions, ev.labels, args.run_dir, task=task, split=split,
                                       prefix=f"{out.stem}-")
            print(f"written: {', '.join(str(p) for p in written.values())}")
    return 0
