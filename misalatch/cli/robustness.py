"""``misalatch robustness RUN_DIR [RUN_DIR|SWEEP_DIR ...] --out DIR``: metric-vs-perturbation curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags
from misalatch.experiments.robustness_config import DEFAULT_LEVELS, DEFAULT_PLOT_METRICS, DEFAULT_SEEDS, NAMES

_HELP = (
    "Evaluate trained runs under Gaussian noise per timestep (x train std), random frame drop and a whole "
    "modality dropped; write curves (CSV + PNG) and their areas to a new folder. "
    "Example: misalatch robustness runs/mosi-none runs/mosi-sequence --out robustness/mosi"
)


@dataclass(frozen=True)
class RobustnessArgs(ThreadsFlag):
    """Robustness curves of one run, several runs or whole sweep folders (variants side by side)."""

    paths: tyro.conf.Positional[tuple[str, ...]]
    """Run folders, or folders searched for runs (seed-<n> folders of one variant are pooled)."""
    out: str
    """New (or empty) folder for the results; an existing non-empty folder is refused."""
    overwrite: bool = False
    """Replace an earlier robustness output folder (never any other folder)."""
    levels: tuple[float, ...] = DEFAULT_LEVELS
    """Noise levels, in units of each feature's train-split standard deviation."""
    frame_rates: tuple[float, ...] = DEFAULT_LEVELS
    """Probabilities of dropping (zeroing) each frame."""
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    """Noise seeds; curves show mean ± std over them."""
    conditions: tuple[Literal["noise", "frames", "drop"], ...] = ("noise", "frames", "drop")
    """Which perturbations: Gaussian noise, frame drop, whole-modality drop."""
    split: Literal["valid", "test"] = "test"
    """The split the curves are measured on."""
    metrics: Optional[tuple[str, ...]] = None
    """Metrics to plot (default: mae corr acc2_non0, or acc f1); every metric is in the CSVs."""
    batch_size: Optional[int] = None
    """Evaluation batch size (default: the run's own; the noise does not depend on it)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: Optional[str] = None
    """Other data prepared the same way (default: each run's own --data)."""
    data_root: Optional[str] = None
    trust_unverified: bool = False
    """Load run folders whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""


def main(argv: list[str]) -> int:
    args = parse_flags(RobustnessArgs, argv, prog="misalatch robustness", description=_HELP)
    from misalatch.experiments.robustness import RobustnessConfig, robustness

    apply_threads(args.threads)
    config = RobustnessConfig(noise_levels=args.levels, frame_rates=args.frame_rates, seeds=args.seeds,
                              split=args.split, conditions=tuple(args.conditions), batch_size=args.batch_size,
                              plot_metrics=args.metrics)
    report = robustness(args.paths, args.out, config, device=args.device, data=args.data, data_root=args.data_root,
                        overwrite=args.overwrite, trust_unverified=args.trust_unverified)
    synthetic = " [SYNTHETIC data]" if any(r.facts["synthetic"] for r in report.runs) else ""
    metric = (args.metrics or DEFAULT_PLOT_METRICS[report.runs[0].task])[0]
    print(f"robustness{synthetic}: {len(report.runs)} run(s), {args.split} split, {metric}; area under each curve "
          f"(trapezoid / level range), mean ± std over runs x {len(args.seeds)} noise seed(s)")
    width = max(len(r.variant) for r in report.runs)
    for area in (a for a in report.summary.areas if a.metric == metric):
        print(f"  {area.variant.ljust(width)}  {area.condition:<6}  {_mods(area.modalities):<28}  "
              f"AUC {area.auc:.4f} ± {_fmt(area.std)}")
    for drop in (d for d in report.summary.drops if d.metric == metric):
        print(f"  {drop.variant.ljust(width)}  drop    {_mods(drop.modalities):<28}  "
              f"{drop.mean:.4f} (clean {drop.clean:.4f})")
    for run in report.runs:
        for note in run.notes:
            print(f"  note ({run.variant}): {note}")
    print(f"written: {report.out_dir}")
    return 0


def _mods(mods: str) -> str:
    return "+".join(NAMES[m] for m in mods)


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"
