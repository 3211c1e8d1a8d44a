"""``misalatch masks RUN_DIR``: export a trained feedback run's masks, heatmaps and statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

from misalatch.cli._config import ThreadsFlag, apply_threads, parse_flags
from misalatch.errors import MisalatchError


@dataclass(frozen=True)
class MasksArgs(ThreadsFlag):
    """Export the feedback masks of a trained MISA+MMLatch run on one split: masks.npz, feature x time
    heatmaps of chosen samples, the mean mask per feature (PNG) and summary.json (mean, Gini,
    per-label-class means)."""

    run_dir: tyro.conf.Positional[str]
    """The run folder of a feedback run (trained with --feedback other than none)."""
    split: Literal["train", "valid", "test"] = "test"
    """Split whose masks are exported."""
    out: Optional[str] = None
    """Output folder (default: RUN_DIR/masks-<split>)."""
    samples: int = 4
    """Heatmaps for the first N samples of the split."""
    ids: tuple[str, ...] = ()
    """Heatmaps for these segment ids instead of the first --samples."""
    data: Optional[str] = None
    """Other data prepared the same way (default: the run's own --data)."""
    data_root: Optional[str] = None
    """Where mosi|mosei|ur_funny live (default: the run's own, else MISALATCH_DATA)."""
    batch_size: Optional[int] = None
    """Default: the run's batch size."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when available."""
    overwrite: bool = False
    """Replace an earlier masks export (only a folder misalatch wrote)."""
    trust_unverified: bool = False
    """Load a run folder whose checkpoint has no manifest (its files cannot be verified; docs/security.md)."""


def _run_model(run_dir: str) -> tuple[str, bool]:
    """The run's model variant and whether it has masks, from its checkpoint sidecar before any data is loaded."""
    from misalatch.errors import CheckpointError, ConfigError
    from misalatch.models.registry import get_model
    from misalatch.training.checkpoint import read_sidecar
    from misalatch.training.run_dir import check_run_links

    check_run_links(run_dir)
    sidecar = read_sidecar(run_dir, "best")
    spec = get_model(str(sidecar.get("model", "misa")))
    try:
        config = spec.config_from_dict(sidecar.get("model_config", {}))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{Path(run_dir) / 'best.json'}: model_config is not a {spec.name!r} config ({err})") from err
    return config.variant, config.has_masks


def main(argv: list[str]) -> int:
    args = parse_flags(MasksArgs, argv, prog="misalatch masks")
    from misalatch.data.batching import iterate_batches
    from misalatch.evaluation.masks import collect_masks, export_masks
    from misalatch.io.owned import check_target, claim_output
    from misalatch.training.run_dir import load_run

    apply_threads(args.threads)
    if not Path(args.run_dir).is_dir():
        raise MisalatchError(f"{args.run_dir}: no such run folder")
    from misalatch.training.checkpoint import verify_manifest

    verify_manifest(args.run_dir, "best", trust_unverified=args.trust_unverified)  # before its sidecar is read
    variant, has_masks = _run_model(args.run_dir)
    if not has_masks:
        raise MisalatchError(
            f"{args.run_dir}: this run's model ({variant}) has no feedback, so it has no masks; masks exist for runs "
            "trained with --feedback sequence, sequence-mlp, static or static-projected, or --model mmlatch"
        )
    out = Path(args.out) if args.out else Path(args.run_dir) / f"masks-{args.split}"
    check_target(out, "masks", overwrite=args.overwrite)  # before the model runs
    run = load_run(args.run_dir, data=args.data, data_root=args.data_root, device=args.device,
                   trust_unverified=args.trust_unverified)
    segments = run.dataset.splits.get(args.split, [])
    if not segments:
        raise MisalatchError(f"{run.config.data}: split {args.split!r} is empty")
    batch_size = args.batch_size or run.config.batch_size or 32
    batches = iterate_batches(segments, run.spec, batch_size)
    collected = collect_masks(run.model, batches, device=run.device)
    meta = {"run_dir": str(args.run_dir), "split": args.split, "data": run.config.data,
            "synthetic": bool(run.dataset.synthetic)}
    with claim_output(out, "masks", overwrite=args.overwrite) as output:  # staged, swapped in when complete
        staging = output.path
        written = export_masks(collected, staging, samples=list(args.ids) if args.ids else args.samples, meta=meta)
        output.record_tree(".")
    written = {k: out / v.relative_to(staging) for k, v in written.items()}

    stats = json.loads(written["summary"].read_text())["modalities"]
    label = " [SYNTHETIC data]" if run.dataset.synthetic else ""
    print(f"{collected.feedback} masks, split {args.split}{label}, {len(collected)} samples:")
    print(f"  {'modality':<10} {'mean':>7} {'std':>7} {'gini':>7}")
    for m, s in stats.items():
        print(f"  {m:<10} {s['mean']:7.4f} {s['std']:7.4f} {s['gini']:7.4f}")
    n_maps = sum(1 for k in written if k.startswith("heatmap:"))
    print(f"written: {written['npz']}, {written['summary']}, {written['mean_mask']}, {n_maps} heatmaps in {out / 'heatmaps'}")
    return 0
