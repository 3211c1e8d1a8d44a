"""Robustness curves: a trained run evaluated on perturbed inputs (docs/robustness.md).

Three kinds of perturbation, applied to each batch's ``ModelInputs`` right before the model:

* ``noise``: Gaussian noise added independently at every valid timestep and feature,
  ``x[τ, j] += level · σ_j · ε``, where ``σ_j`` is feature ``j``'s standard deviation over all
  valid timesteps of the run's TRAIN split (stored with the results) and ``ε ~ N(0, 1)``;
* ``frames``: each valid timestep is dropped with probability ``rate``; a dropped frame keeps its
  place and is set to zero in every feature (the sequence is not shortened). On aligned data
  (word / token) the same timesteps are drawn for every modality, so "all modalities" drops whole
  words and per-modality drops hit the same positions;
* ``drop``: a whole modality removed, fed as zeros exactly as an absent modality is fed today
  (acoustic / visual: the batching's zero path, via the run's ``modalities``; text vectors: zeros).

Text is perturbed only when it reaches the model as vectors (``text_encoder=vectors``); token ids
(GloVe / learned / source / BERT) are left clean, because noise on an integer id means nothing and
noise on the embedding would be a change inside the model, not of its inputs.

Every random draw comes from a CPU ``torch.Generator`` seeded from (noise seed, perturbation kind,
modality, segment id) alone, never from global RNG, and the same ε / uniform draw is scaled or
thresholded at every level (common random numbers: curves are smooth, frames dropped at rate r are
a subset of those dropped at r' > r, and every variant sees the same noise on the same data).
Level 0 is not perturbed at all, so it equals plain evaluation exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch

from misalatch.data.batching import Batch, BatchSpec
from misalatch.data.canonical import Segment
from misalatch.errors import ConfigError, DataFormatError
from misalatch.evaluation.aggregate import aggregate
from misalatch.models.outputs import ModelInputs, PerModality
from misalatch.io.owned import check_target, claim_output
from misalatch.io.progress import progress_bar
from misalatch.training.loop import SplitEvaluation, evaluate
from misalatch.training.run_dir import LoadedRun, load_run
from misalatch.experiments.robustness_config import (  # noqa: F401 - re-exported
    CONDITIONS, CURVE_CONDITIONS, DEFAULT_LEVELS, DEFAULT_PLOT_METRICS, DEFAULT_SEEDS, FIELDS, MODALITY_ORDER, NAMES,
    RobustnessConfig,
)

log = logging.getLogger(__name__)

FORMAT = "misalatch-robustness"
FORMAT_VERSION = 1
_SEED_DIR = re.compile(r"seed-\d+")
_MAX_SEARCH_DEPTH = 6

Condition = Literal["clean", "noise", "frames", "drop"]


# ----------------------------------------------------------------------------------------------
# the train-split scale and what a run lets us perturb
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureScale:
    """Per-feature population std over all valid train timesteps, per perturbable modality."""

    std: PerModality[np.ndarray | None]
    timesteps: PerModality[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "std": {m: None if s is None else [float(v) for v in s] for m, s in self.std.items()},
            "timesteps": dict(self.timesteps.items()),
        }


def text_encoder_label(run: LoadedRun) -> str:
    """The text encoder as the user chose it (``learned``, ``glove``, ``minilm``, a BERT folder...), not
    the model's input kind: a learned embedding and GloVe both reach the model as "glove" token ids."""
    chosen = run.config.text_encoder
    if chosen:
        return chosen
    return "minilm" if run.spec.text_encoder == "bert" else str(run.sidecar.get("text_encoder") or run.spec.text_encoder)


def perturbable_modalities(spec: BatchSpec, text_label: str | None = None) -> tuple[str, list[str]]:
    """The modalities whose inputs can be perturbed (in ``tav`` order) and why others are not."""
    mods, notes = "", []
    if spec.text_encoder == "vectors":
        mods += "t"
    else:
        notes.append(f"text: reaches the model as token ids ({text_label or spec.text_encoder}); noise and frame drop of "
                     "text are not applicable, text is left clean")
    for m in "av":
        if m in spec.modalities:
            mods += m
        else:
            notes.append(f"{NAMES[m]}: not used by this run (fed as zeros); not perturbed")
    return mods, notes


def train_feature_scale(segments: Sequence[Segment], modalities: str) -> FeatureScale:
    """σ per feature over every valid timestep of ``segments`` (the train split), in float64.

    Segments are merged with Chan's pairwise update, so long splits lose no precision. A feature
    that is constant over the train split gets σ = 0 (no noise): there is no scale to borrow.
    """
    std: dict[str, np.ndarray | None] = {m: None for m in MODALITY_ORDER}
    counts: dict[str, int] = {m: 0 for m in MODALITY_ORDER}
    for m in modalities:
        n, mean, m2 = 0, None, None
        for seg in segments:
            x = getattr(seg, FIELDS[m])
            if x is None or x.shape[0] == 0:
                continue
            x = np.asarray(x, dtype=np.float64)
            if not np.isfinite(x).all():
                raise DataFormatError(f"train segment {seg.id!r}: {FIELDS[m]} holds non-finite values; "
                                      "cannot compute the noise scale")
            k, mu = x.shape[0], x.mean(axis=0)
            s = ((x - mu) ** 2).sum(axis=0)
            if mean is None:
                n, mean, m2 = k, mu, s
                continue
            delta = mu - mean
            total = n + k
            mean = mean + delta * (k / total)
            m2 = m2 + s + delta**2 * (n * k / total)
            n = total
        if mean is None:
            raise DataFormatError(f"train split: no {NAMES[m]} timesteps to compute the noise scale from")
        std[m] = np.sqrt(m2 / n).astype(np.float32)
        counts[m] = n
    return FeatureScale(std=PerModality(**std), timesteps=PerModality(**counts))


# ----------------------------------------------------------------------------------------------
# perturbations
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Perturbation:
    """One evaluation condition: ``modalities`` (letters of ``tav``) perturbed at ``level``."""

    condition: Condition
    modalities: str = ""
    level: float = 0.0
    seed: int | None = None

    @property
    def is_identity(self) -> bool:
        return self.condition == "clean" or (self.condition in CURVE_CONDITIONS and self.level == 0.0)


def stream_seed(seed: int, kind: str, key: str, segment_id: str) -> int:
    """The generator seed of one segment's draws: a hash of everything that identifies them."""
    digest = hashlib.sha256(f"{seed}\0{kind}\0{key}\0{segment_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _generator(seed: int, kind: str, key: str, segment_id: str) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(stream_seed(seed, kind, key, segment_id))


def _lengths(inputs: ModelInputs, m: str) -> torch.Tensor:
    return {"t": inputs.lengths, "a": inputs.acoustic_lengths, "v": inputs.visual_lengths}[m]


def perturb_inputs(inputs: ModelInputs, ids: Sequence[str], p: Perturbation, scale: FeatureScale) -> ModelInputs:
    """A perturbed copy of ``inputs`` (CPU, time-first); padding steps stay zero.

    ``drop`` of acoustic / visual is done by the batching (see ``spec_for``), so here it only
    zeroes text vectors.
    """
    if p.is_identity:
        return inputs
    if p.seed is None and p.condition in CURVE_CONDITIONS:
        raise ValueError(f"{p.condition} needs a seed")
    changes: dict[str, torch.Tensor] = {}
    mods = p.modalities if p.condition != "drop" else p.modalities.replace("a", "").replace("v", "")
    for m in mods:
        x = getattr(inputs, FIELDS[m])
        if x is None:
            raise ValueError(f"{p.condition} on {NAMES[m]}: the batch has no {FIELDS[m]}")
        x = x.clone()
        lengths = _lengths(inputs, m)
        if p.condition == "noise":
            sigma = torch.from_numpy(np.asarray(getattr(scale.std, m), dtype=np.float32))
            for b, seg_id in enumerate(ids):
                n = int(lengths[b])
                eps = torch.randn((n, x.shape[2]), generator=_generator(p.seed, "noise", m, seg_id))
                x[:n, b] += p.level * sigma * eps
        elif p.condition == "frames":
            key = m if inputs.alignment == "none" else "aligned"  # aligned data: the same steps everywhere
            for b, seg_id in enumerate(ids):
                n = int(lengths[b])
                dropped = torch.rand(n, generator=_generator(p.seed, "frames", key, seg_id)) < p.level
                x[:n, b][dropped] = 0.0
        else:  # drop: the whole text-vector sequence
            x.zero_()
        changes[FIELDS[m]] = x
    return dataclasses.replace(inputs, **changes)


def spec_for(spec: BatchSpec, p: Perturbation) -> BatchSpec:
    """A dropped acoustic / visual modality goes down the batching's absent-modality path."""
    if p.condition != "drop":
        return spec
    keep = "".join(m for m in spec.modalities if m == "t" or m not in p.modalities)
    return dataclasses.replace(spec, modalities=keep)


def evaluate_perturbed(run: LoadedRun, segments: Sequence[Segment], p: Perturbation, scale: FeatureScale,
                       *, batch_size: int | None = None) -> SplitEvaluation:
    """Evaluate ``run`` on ``segments`` under ``p`` (the identity is plain ``evaluate``)."""
    def perturb(batch: Batch) -> ModelInputs:
        return perturb_inputs(batch.inputs, batch.ids, p, scale)

    return evaluate(run.model, segments, spec_for(run.spec, p), batch_size=batch_size or run.config.batch_size or 32,
                    device=run.device, reduction=run.config.dev_loss_reduction,
                    perturb=None if p.is_identity else perturb)


# ----------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One evaluation: a condition at a level with a noise seed (None where nothing is random)."""

    condition: Condition
    modalities: str
    level: float
    seed: int | None
    loss: float
    metrics: dict[str, float]


@dataclass
class RunRobustness:
    run_dir: Path
    variant: str
    task: str
    perturbable: str
    notes: list[str]
    scale: FeatureScale
    facts: dict[str, Any]
    records: list[Record] = field(default_factory=list)

    @property
    def clean(self) -> Record:
        return next(r for r in self.records if r.condition == "clean")


def modality_sets(perturbable: str, condition: str) -> list[str]:
    """Each modality alone, then all together (curves) or acoustic + visual together (drop)."""
    sets = list(perturbable)
    if condition in CURVE_CONDITIONS and len(perturbable) > 1:
        sets.append(perturbable)
    if condition == "drop" and "a" in perturbable and "v" in perturbable:
        sets.append("av")
    return sets


def run_robustness(run: LoadedRun, config: RobustnessConfig, *, variant: str = "") -> RunRobustness:
    """Every configured condition on one loaded run's ``config.split``."""
    segments = run.dataset.splits[config.split]
    label = text_encoder_label(run)
    perturbable, notes = perturbable_modalities(run.spec, label)
    if not perturbable:
        raise ConfigError(f"{run.run_dir}: this run uses no input that can be perturbed ({'; '.join(notes)})")
    scale = train_feature_scale(run.dataset.splits["train"], perturbable)
    facts = {
        "data": run.config.data, "dataset": run.dataset.name, "synthetic": run.dataset.synthetic,
        "task": run.dataset.task, "alignment": run.dataset.alignment, "text_encoder": label,
        "modalities": run.spec.modalities, "model": run.config.model, "feedback": run.config.feedback,
        "split": config.split,
        "segments": len(segments), "batch_size": config.batch_size or run.config.batch_size or 32,
        "train_seed": run.sidecar.get("seed"), "device": str(run.device),
    }
    result = RunRobustness(run.run_dir, variant or run.run_dir.name, run.dataset.task, perturbable, notes, scale, facts)

    def record(p: Perturbation) -> Record:
        ev = evaluate_perturbed(run, segments, p, scale, batch_size=config.batch_size)
        return Record(p.condition, p.modalities, p.level, p.seed, ev.loss, dict(ev.metrics))

    clean = record(Perturbation("clean"))
    result.records.append(clean)
    for condition in (c for c in CURVE_CONDITIONS if c in config.conditions):
        for mods in modality_sets(perturbable, condition):
            log.info("%s: %s on %s", result.variant, condition, "+".join(NAMES[m] for m in mods))
            for level in config.levels(condition):
                for seed in config.seeds:
                    if level == 0.0:  # unperturbed: the clean evaluation is this point for every seed
                        result.records.append(dataclasses.replace(clean, condition=condition, modalities=mods, seed=seed))
                    else:
                        result.records.append(record(Perturbation(condition, mods, level, seed)))
    if "drop" in config.conditions:
        for mods in modality_sets(perturbable, "drop"):
            result.records.append(record(Perturbation("drop", mods, 1.0)))
    return result


# ----------------------------------------------------------------------------------------------
# curves, areas, drops (over the runs of a variant and the noise seeds)
# ----------------------------------------------------------------------------------------------
def curve_auc(levels: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` over ``levels``, divided by the level range (a mean height)."""
    x = np.asarray(levels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2 or np.any(np.diff(x) <= 0):
        raise ConfigError(f"curve_auc: need >= 2 strictly increasing levels with one value each, got {list(x)}")
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)
    return area / float(x[-1] - x[0])


@dataclass(frozen=True)
class CurvePoint:
    variant: str
    condition: str
    modalities: str
    level: float
    metric: str
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class CurveArea:
    variant: str
    condition: str
    modalities: str
    metric: str
    auc: float
    std: float
    n: int
    level_min: float
    level_max: float


@dataclass(frozen=True)
class DropResult:
    variant: str
    modalities: str
    metric: str
    mean: float
    std: float
    n: int
    clean: float


@dataclass
class Summary:
    curves: list[CurvePoint]
    areas: list[CurveArea]
    drops: list[DropResult]


def _stats(values: list[float]) -> tuple[float, float, int]:
    agg = aggregate([{"v": v} for v in values])["v"]
    return agg["mean"], agg["std"], agg["n"]


def variants_of(results: Sequence[RunRobustness]) -> dict[str, list[RunRobustness]]:
    out: dict[str, list[RunRobustness]] = {}
    for r in results:
        out.setdefault(r.variant, []).append(r)
    return out


def summarise(results: Sequence[RunRobustness], config: RobustnessConfig) -> Summary:
    """Mean ± std (ddof 1) over every (run, noise seed) of a variant, per level and metric."""
    curves: list[CurvePoint] = []
    areas: list[CurveArea] = []
    drops: list[DropResult] = []
    for variant, runs in variants_of(results).items():
        metrics = list(runs[0].clean.metrics)
        for condition in (c for c in CURVE_CONDITIONS if c in config.conditions):
            levels = config.levels(condition)
            sets = _ordered_union(modality_sets(r.perturbable, condition) for r in runs)
            for mods in sets:
                # curve[(run, seed)][level] = record
                curve: dict[tuple[int, int], dict[float, Record]] = {}
                for i, r in enumerate(runs):
                    for rec in r.records:
                        if rec.condition == condition and rec.modalities == mods:
                            curve.setdefault((i, rec.seed), {})[rec.level] = rec
                for metric in metrics:
                    for level in levels:
                        mean, std, n = _stats([c[level].metrics[metric] for c in curve.values()])
                        curves.append(CurvePoint(variant, condition, mods, level, metric, mean, std, n))
                    auc_values = [curve_auc(levels, [c[lv].metrics[metric] for lv in levels]) for c in curve.values()]
                    mean, std, n = _stats(auc_values)
                    areas.append(CurveArea(variant, condition, mods, metric, mean, std, n, levels[0], levels[-1]))
        if "drop" in config.conditions:
            clean = {m: _stats([r.clean.metrics[m] for r in runs])[0] for m in metrics}
            for mods in _ordered_union(modality_sets(r.perturbable, "drop") for r in runs):
                recs = [rec for r in runs for rec in r.records if rec.condition == "drop" and rec.modalities == mods]
                for metric in metrics:
                    mean, std, n = _stats([rec.metrics[metric] for rec in recs])
                    drops.append(DropResult(variant, mods, metric, mean, std, n, clean[metric]))
    return Summary(curves, areas, drops)


def _ordered_union(groups: Iterable[list[str]]) -> list[str]:
    out: list[str] = []
    for group in groups:
        out.extend(g for g in group if g not in out)
    return out


# ----------------------------------------------------------------------------------------------
# finding runs
# ----------------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    """A trained run folder: it holds the best checkpoint's sidecar misalatch writes."""
    return path.is_dir() and (path / "best.json").is_file()


def find_runs(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Run folders in ``paths`` (each a run, or a folder searched for runs), with variant labels.

    A run's label is its path below the given folder (its own name when given directly); a
    trailing ``seed-<n>`` folder is dropped, so the seeds of one variant are pooled. Hidden folders
    and symbolic links are not followed.
    """
    if not paths:
        raise ConfigError("give one or more run folders or sweep folders")
    found: list[tuple[Path, Path, str]] = []  # (run, root, relative label)
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise ConfigError(f"{root}: no such folder (expected a run folder or a folder of runs)")
        runs = [root] if is_run_dir(root) else _search(root)
        if not runs:
            raise ConfigError(f"{root}: not a misalatch run folder (no best.json) and no run folders below it")
        for run in runs:
            rel = run.relative_to(root).parts
            if rel and _SEED_DIR.fullmatch(rel[-1]):
                rel = rel[:-1]
            found.append((run, root, "/".join(rel)))
    roots = list(dict.fromkeys(r for _, r, _ in found))
    names = [r.resolve().name or str(r) for r in roots]  # "." has no name of its own
    prefix = {r: n if names.count(n) == 1 else str(r) for r, n in zip(roots, names)}
    out, seen = [], set()
    for run, root, rel in found:
        key = run.resolve()
        if key in seen:
            continue
        seen.add(key)
        if len(roots) == 1:
            label = rel or prefix[root]
        else:
            label = f"{prefix[root]}/{rel}" if rel else prefix[root]
        out.append((run, label))
    return out


def _search(root: Path, depth: int = 0) -> list[Path]:
    if depth >= _MAX_SEARCH_DEPTH:
        return []
    out: list[Path] = []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except OSError as err:
        raise ConfigError(f"{root}: cannot list the folder ({err.strerror})") from err
    for child in children:
        out.extend([child] if is_run_dir(child) else _search(child, depth + 1))
    return out


# ----------------------------------------------------------------------------------------------
# writing: CSVs, plots, a JSON record; the folder appears whole or not at all
# ----------------------------------------------------------------------------------------------
RAW_COLUMNS = ("variant", "run", "condition", "modalities", "level", "seed", "loss")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def _dataclass_csv(items: Sequence[Any], cls: type) -> bytes:
    names = [f.name for f in dataclasses.fields(cls)]
    return _csv(names, ([getattr(i, n) for n in names] for i in items))


def render_files(results: Sequence[RunRobustness], summary: Summary, config: RobustnessConfig) -> dict[str, bytes]:
    """Every output file's name and bytes."""
    metrics = list(results[0].clean.metrics)
    raw = [
        [r.variant, str(r.run_dir), rec.condition, rec.modalities, rec.level, rec.seed, rec.loss,
         *[rec.metrics.get(m, float("nan")) for m in metrics]]
        for r in results for rec in r.records
    ]
    files = {
        "raw.csv": _csv([*RAW_COLUMNS, *metrics], raw),
        "curves.csv": _dataclass_csv(summary.curves, CurvePoint),
        "auc.csv": _dataclass_csv(summary.areas, CurveArea),
    }
    if "drop" in config.conditions:
        files["drop.csv"] = _dataclass_csv(summary.drops, DropResult)
    for metric in _plot_metrics(results, config):
        for condition in (c for c in CURVE_CONDITIONS if c in config.conditions):
            files[f"{condition}-{metric}.png"] = plot_curves(summary, condition, metric, config)
        if "drop" in config.conditions:
            files[f"drop-{metric}.png"] = plot_drops(summary, metric, config)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "synthetic": any(r.facts["synthetic"] for r in results),
        "settings": {"noise_levels": list(config.levels("noise")), "frame_rates": list(config.levels("frames")),
                     "seeds": list(config.seeds), "split": config.split, "conditions": list(config.conditions),
                     "batch_size": config.batch_size, "std": "population (ddof 0) over all valid train timesteps",
                     "spread": "sample std (ddof 1) over every (run, noise seed) of a variant"},
        "runs": [{"run_dir": str(r.run_dir), "variant": r.variant, **r.facts, "perturbed": r.perturbable,
                  "notes": r.notes, "clean": r.clean.metrics, "clean_loss": r.clean.loss,
                  "train_scale": r.scale.as_json()} for r in results],
        "files": sorted([*files, "robustness.json"]),
    }
    files["robustness.json"] = (json.dumps(doc, indent=2, allow_nan=True) + "\n").encode("utf-8")
    return files


def write_results(files: dict[str, bytes], out: Path, *, overwrite: bool = False) -> Path:
    """Write every file into a claimed output folder: it appears whole (marker ``run.json``, kind
    robustness) or not at all; ``overwrite`` replaces only an earlier robustness folder."""
    with claim_output(out, "robustness", overwrite=overwrite) as output:
        for name, data in files.items():
            output.write_bytes(name, data)
    return out


# ---- plots ----
def _plot_metrics(results: Sequence[RunRobustness], config: RobustnessConfig) -> tuple[str, ...]:
    available = list(results[0].clean.metrics)
    wanted = config.plot_metrics or DEFAULT_PLOT_METRICS.get(results[0].task, tuple(available[:2]))
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ConfigError(f"metrics: {', '.join(unknown)} not among this task's metrics ({', '.join(available)})")
    return tuple(wanted)


def _label(mods: str) -> str:
    return "+".join(NAMES[m] for m in mods) if len(mods) < 3 else "all (text+acoustic+visual)"


def _figure_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


TITLES = {"noise": "Gaussian noise (× train std), per timestep", "frames": "frames dropped (zeroed), rate"}


def plot_curves(summary: Summary, condition: str, metric: str, config: RobustnessConfig) -> bytes:
    """One panel per modality set; one line per variant with a ±std band; AUC in the legend."""
    plt = _pyplot()
    points = [p for p in summary.curves if p.condition == condition and p.metric == metric]
    sets = list(dict.fromkeys(p.modalities for p in points))
    variants = list(dict.fromkeys(p.variant for p in points))
    auc = {(a.variant, a.modalities): a.auc for a in summary.areas if a.condition == condition and a.metric == metric}
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets) + 1, 3.6), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, mods in zip(axes[0], sets):
        for variant in variants:
            pts = [p for p in points if p.variant == variant and p.modalities == mods]
            if not pts:
                continue
            x = np.array([p.level for p in pts])
            y = np.array([p.mean for p in pts])
            s = np.array([p.std for p in pts])
            line, = ax.plot(x, y, marker="o", ms=3, label=f"{variant} (AUC {auc[(variant, mods)]:.3g})")
            if np.isfinite(s).any():
                ax.fill_between(x, y - np.nan_to_num(s), y + np.nan_to_num(s), color=line.get_color(), alpha=0.2)
        ax.set(title=_label(mods), xlabel="level" if condition == "noise" else "drop rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(f"{TITLES[condition]} — {config.split} {metric}, mean ± std over {len(config.seeds)} noise seed(s)",
                 fontsize=9)
    return _figure_bytes(fig)


def plot_drops(summary: Summary, metric: str, config: RobustnessConfig) -> bytes:
    """Grouped bars: clean, then each dropped modality set; one bar per variant."""
    plt = _pyplot()
    rows = [d for d in summary.drops if d.metric == metric]
    variants = list(dict.fromkeys(d.variant for d in rows))
    sets = list(dict.fromkeys(d.modalities for d in rows))
    groups = ["none", *sets]
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 3.6), constrained_layout=True)
    for i, variant in enumerate(variants):
        by_set = {d.modalities: d for d in rows if d.variant == variant}
        clean = next(d.clean for d in rows if d.variant == variant)
        heights = [clean] + [by_set[s].mean if s in by_set else np.nan for s in sets]
        errors = [0.0] + [np.nan_to_num(by_set[s].std) if s in by_set else 0.0 for s in sets]
        ax.bar(np.arange(len(groups)) + (i - (len(variants) - 1) / 2) * width, heights, width, yerr=errors,
               label=variant, capsize=2)
    ax.set_xticks(np.arange(len(groups)), ["none dropped", *(f"{_label(s)} dropped" for s in sets)], fontsize=7)
    ax.set(ylabel=metric, title=f"whole modality dropped (zeros) — {config.split} {metric}")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _figure_bytes(fig)


# ----------------------------------------------------------------------------------------------
# the whole job
# ----------------------------------------------------------------------------------------------
@dataclass
class RobustnessReport:
    out_dir: Path
    runs: list[RunRobustness]
    summary: Summary


def robustness(paths: Sequence[str | Path], out: str | Path, config: RobustnessConfig | None = None, *,
               device: str = "auto", data: str | None = None, data_root: str | None = None,
               overwrite: bool = False, trust_unverified: bool = False) -> RobustnessReport:
    """Robustness curves of every run in ``paths`` written to the new folder ``out`` (each run loaded
    by ``misalatch.training.run_dir.load_run``, ``trust_unverified`` passed on)."""
    config = config or RobustnessConfig()
    out = Path(out)
    check_target(out, "robustness", overwrite=overwrite)  # fail before the long part; checked again on claim
    found = find_runs(paths)
    results: list[RunRobustness] = []
    with progress_bar(len(found), "robustness", unit="run") as bar:
        for run_dir, variant in found:
            log.info("robustness of %s (variant %s)", run_dir, variant)
            run = load_run(run_dir, data=data, data_root=data_root, device=device, trust_unverified=trust_unverified)
            results.append(run_robustness(run, config, variant=variant))
            bar.update()
    tasks = {r.task for r in results}
    if len(tasks) > 1:
        raise ConfigError(f"runs of different tasks ({', '.join(sorted(tasks))}) cannot share curves; run them separately")
    summary = summarise(results, config)
    write_results(render_files(results, summary, config), out, overwrite=overwrite)
    return RobustnessReport(out, results, summary)


__all__ = [
    "CONDITIONS", "DEFAULT_LEVELS", "DEFAULT_SEEDS", "FeatureScale", "Perturbation", "Record", "RobustnessConfig",
    "RobustnessReport", "RunRobustness", "Summary", "curve_auc", "evaluate_perturbed", "find_runs",
    "perturb_inputs", "perturbable_modalities", "robustness", "run_robustness", "summarise", "train_feature_scale",
]
