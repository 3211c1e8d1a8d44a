"""The results of a sweep: ``results.json`` (the contract other tools read), ``results.csv``,
``results.md`` and ``results.png``, built from the study's trials alone.

Every number comes from the storage (each complete trial carries its run's metrics, best epoch and
epochs run), so the table can be written by any worker, on any machine, even where the run folders
of other machines are not visible. Per variant: mean ± sample std (ddof = 1) and n of every
validation and test metric, the per-seed values; per variant against its baseline: the paired
test-split differences (``misalatch.experiments.stats``).

``results.json`` (format ``misalatch-sweep-results``, version 1)::

    {"format", "version", "sweep": {"grid", "baseline", "storage", "study"},
     "variants": [{"key", "params", "n", "seeds", "runs": [{"seed", "run_dir", "state", "error",
                   "best_epoch", "epochs_run", "attempts", "validation", "test"}],
                   "validation": {metric: {"mean", "std", "n", "values"}}, "test": {...}}],
     "paired": [{"variant", "baseline", "split", "metric", "n", "seeds", "differences", "mean",
                 "ci95", "p_value", "test", "wilcoxon_p"}],
     "failed": [{"key", "seed", "error", "attempts"}], "pending": [{"key", "seed"}]}

NaN (an undefined metric) is written as null, as strict JSON has no NaN.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from optuna.trial import TrialState

from misalatch.errors import MisalatchError
from misalatch.evaluation.aggregate import aggregate, ordered_union
from misalatch.evaluation.report import DISPLAY_NAMES, _fmt
from misalatch.experiments.folders import settings_text
from misalatch.experiments.stats import paired_comparison
from misalatch.experiments.studies import attempts, default_storage, json_safe, redact, typed_attr
from misalatch.experiments.sweep import Sweep, point_of, progress, write_owned
from misalatch.io.atomic import atomic_savefig
from misalatch.io.owned import record_written

log = logging.getLogger(__name__)

RESULTS_FORMAT = "misalatch-sweep-results"
RESULTS_VERSION = 1
SPLITS = ("validation", "test")
CHART_METRICS = {"regression": ("mae", "corr", "acc2_non0", "f1_non0", "acc2_has0", "acc7"),
                 "classification": ("acc", "f1")}


def _metrics(attrs: dict[str, Any], name: str) -> dict[str, float]:
    """A run's stored metrics (name → number); anything else a crafted study holds is left out."""
    value = attrs.get(name)
    if not isinstance(value, dict):
        return {}
    return {k: float(v) for k, v in value.items() if isinstance(k, str) and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def collect(sweep: Sweep) -> dict[str, Any]:
    """The results document of a sweep, from its trials."""
    spec = sweep.spec
    state = progress(sweep)
    trials = sweep.study.get_trials(deepcopy=False)
    failed_by_point: dict[tuple[str, int], list] = {}
    for t in trials:
        point = point_of(spec, t)
        if t.state == TrialState.FAIL and point is not None:
            failed_by_point.setdefault(point, []).append(t)
    pending_points = {point_of(spec, t) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)}

    variants, failed, pending = [], [], []
    for params in spec.variants():
        key = spec.key(params)
        runs, done = [], []
        for seed in spec.seeds:
            trial = state.complete.get((key, seed))
            if trial is not None:
                attrs = trial.user_attrs  # a stranger's study may hold anything: wrong types read as missing
                run = {"seed": seed, "run_dir": typed_attr(attrs, "run_dir", str), "state": "complete", "error": None,
                       "best_epoch": typed_attr(attrs, "best_epoch", int), "epochs_run": typed_attr(attrs, "epochs_run", int),
                       "attempts": attempts(trial), "worker": typed_attr(attrs, "worker", str),
                       "validation": _metrics(attrs, "validation"), "test": _metrics(attrs, "test")}
                runs.append(run)
                done.append(run)
                continue
            tries = failed_by_point.get((key, seed), [])
            if (key, seed) in pending_points or not tries:
                pending.append({"key": key, "seed": seed})
                continue
            last = max(tries, key=lambda t: t.number)
            error = (typed_attr(last.user_attrs, "error", str)
                     or "the worker stopped (killed or interrupted) before the run finished")
            runs.append({"seed": seed, "run_dir": typed_attr(last.user_attrs, "run_dir", str), "state": "failed",
                         "error": error, "best_epoch": None, "epochs_run": None, "attempts": len(tries),
                         "worker": typed_attr(last.user_attrs, "worker", str),
                         "validation": {}, "test": {}})
            failed.append({"key": key, "seed": seed, "error": error, "attempts": len(tries)})
        entry: dict[str, Any] = {"key": key, "params": params, "folder": spec.folder(params), "n": len(done),
                                 "seeds": [r["seed"] for r in done], "runs": runs}
        for split in SPLITS:
            entry[split] = aggregate([r[split] for r in done]) if done and all(r[split] for r in done) else {}
        variants.append(entry)

    by_params = {json.dumps(v["params"], sort_keys=True): v for v in variants}
    paired = []
    for variant in variants:
        base_params = spec.baseline_of(variant["params"])
        if base_params is None:
            continue
        base = by_params[json.dumps(base_params, sort_keys=True)]
        for metric in variant["test"] or base["test"]:
            mine = {r["seed"]: r["test"][metric] for r in variant["runs"] if r["state"] == "complete" and metric in r["test"]}
            theirs = {r["seed"]: r["test"][metric] for r in base["runs"] if r["state"] == "complete" and metric in r["test"]}
            cmp = paired_comparison(mine, theirs)
            paired.append({"variant": variant["key"], "baseline": base["key"], "split": "test", "metric": metric,
                           "n": cmp.n, "seeds": cmp.seeds, "differences": cmp.differences, "mean": cmp.mean,
                           "ci95": list(cmp.ci95), "p_value": cmp.p_value, "test": cmp.test,
                           "wilcoxon_p": cmp.wilcoxon_p})
    baseline_keys = sorted({p["baseline"] for p in paired}) or ([spec.key({**spec.variants()[0], **spec.baseline})]
                                                                 if spec.baseline else [])
    return {"format": RESULTS_FORMAT, "version": RESULTS_VERSION,
            "sweep": {"grid": {k: list(v) for k, v in spec.grid.items()},
                      "baseline": baseline_keys[0] if len(baseline_keys) == 1 else (baseline_keys or None),
                      "baseline_values": spec.baseline, "variants": spec.named,
                      "storage": redact(sweep.storage_url), "study": sweep.name,
                      "base_config": spec.base.to_dict(), "std_ddof": 1,
                      "task": _task(variants)},
            "variants": variants, "paired": paired, "failed": failed, "pending": pending}


def _task(variants: list[dict[str, Any]]) -> Optional[str]:
    for v in variants:
        if v["test"] or v["validation"]:
            return "classification" if "acc" in (v["test"] or v["validation"]) else "regression"
    return None


def write_results(sweep: Sweep, out: Optional[Path] = None) -> dict[str, Path]:
    """Write results.json / .csv / .md / .png into the sweep folder (atomically, each)."""
    out = Path(out or sweep.out)
    doc = collect(sweep)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md",
             "png": out / "results.png"}
    write_owned(out, "results.json", json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    write_owned(out, "results.csv", results_csv(doc))
    write_owned(out, "results.md", results_markdown(doc, out))
    record_written(paths["png"])
    plot_results(doc, paths["png"])
    log.info("sweep %s: results in %s", sweep.name, paths["md"])
    return paths


def _metric_names(doc: dict[str, Any], split: str) -> list[str]:
    names: dict[str, None] = {}
    for v in doc["variants"]:
        for m in v[split]:
            names.setdefault(m, None)
    return list(names)


def results_csv(doc: dict[str, Any]) -> str:
    """One row per variant and split: params, n, seeds, ``<metric>_mean`` / ``<metric>_std``."""
    fields = list(doc["sweep"]["grid"])
    fields.remove("seed")
    metrics = ordered_union(_metric_names(doc, s) for s in SPLITS)
    columns = ["key", *fields, "split", "n", "seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for v in doc["variants"]:
        for split in SPLITS:
            row: dict[str, Any] = {"key": v["key"], **v["params"], "split": split, "n": v["n"],
                                   "seeds": " ".join(map(str, v["seeds"]))}
            for m, st in v[split].items():
                row[f"{m}_mean"], row[f"{m}_std"] = repr(float(st["mean"])), repr(float(st["std"]))
            writer.writerow(row)
    return buf.getvalue()


def _cell(metric: str, stats: dict[str, Any]) -> str:
    """``mean ± std``; the mean alone when the std is undefined (one run: the n column says so)."""
    if stats.get("std") is None or (isinstance(stats["std"], float) and math.isnan(stats["std"])):
        return _fmt(metric, stats["mean"])
    return f"{_fmt(metric, stats['mean'])} ± {_fmt(metric, stats['std'])}"


def _label(metric: str) -> str:
    name = DISPLAY_NAMES.get(metric, metric)
    return f"{name} (%)" if metric.startswith(("acc", "f1")) else name


def _settings_lines(base: dict[str, Any]) -> list[str]:
    """The sweep's training settings that differ from the defaults (Markdown)."""
    from misalatch.training.config import TrainConfig, changed_settings

    if not base:
        return []
    try:
        changed = changed_settings(TrainConfig.from_dict(base, source="results.json base_config"))
    except MisalatchError as err:
        return [f"Settings: unreadable ({err}).", ""]
    if not changed:
        return ["Settings: every training setting at its default.", ""]
    return ["Settings that differ from the defaults (every run): " + settings_text(changed) + ".", ""]


def _storage_text(storage: Any, folder: Optional[Path]) -> str:
    """The storage as the table shows it: the default SQLite file of ``folder`` by its name only, so a
    table copied elsewhere (a notebook, a paper's notes) names no path of the machine that wrote it."""
    if folder is not None and storage == redact(default_storage(folder)):
        return "`study.db` in this folder (SQLite)"
    return f"`{storage}`"


def results_markdown(doc: dict[str, Any], folder: Optional[Path] = None) -> str:
    """The Markdown table of a results document; ``folder``: the sweep folder it is written into."""
    sweep = doc["sweep"]
    base = sweep.get("base_config") if isinstance(sweep.get("base_config"), dict) else {}
    synthetic = str(base.get("data", "")).lower() == "synthetic"
    lines = [f"# Sweep `{sweep['study']}`{' [SYNTHETIC data]' if synthetic else ''}", "",
             f"Data: {'SYNTHETIC (generated; says nothing about real sentiment)' if synthetic else base.get('data', '?')}.  ",
             "Grid: " + ", ".join(f"`{k}` = {', '.join(map(str, v))}" for k, v in sweep["grid"].items()) + ".  ",
             f"Storage: {_storage_text(sweep['storage'], folder)}. Mean ± sample std (ddof = 1) over seeds; n = complete runs; "
             "accuracies and F1 in %.", "", *_settings_lines(base)]
    for split in ("test", "validation"):
        metrics = _metric_names(doc, split)
        if not metrics:
            continue
        lines += [f"## {split.capitalize()}", "", "| variant | n | " + " | ".join(_label(m) for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for v in doc["variants"]:
            cells = [_cell(m, v[split][m]) if m in v[split] else "–" for m in metrics]
            lines.append(f"| {v['key']} | {v['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    if doc["paired"]:
        lines += ["## Paired differences on the test split (variant − baseline, same seeds)", "",
                  "Mean difference with a 95 % t confidence interval; p: two-sided paired t-test "
                  "(Wilcoxon signed-rank in brackets when n ≥ 6).", "",
                  "| variant | baseline | metric | n | mean diff | 95 % CI | p |", "|---|---|---|---|---|---|---|"]
        for p in doc["paired"]:
            scale = 100.0 if p["metric"].startswith(("acc", "f1")) else 1.0
            ci = "n/a (1 seed)" if p["n"] < 2 else "–" if not all(math.isfinite(c) for c in p["ci95"]) else \
                f"[{p['ci95'][0] * scale:+.3f}, {p['ci95'][1] * scale:+.3f}]"
            pv = "n/a (1 seed)" if p["n"] < 2 else "–" if not math.isfinite(p["p_value"]) else f"{p['p_value']:.3g}"
            if p.get("wilcoxon_p") is not None and math.isfinite(p["wilcoxon_p"]):
                pv += f" ({p['wilcoxon_p']:.3g})"
            mean = "–" if not math.isfinite(p["mean"]) else f"{p['mean'] * scale:+.3f}"
            lines.append(f"| {p['variant']} | {p['baseline']} | {_label(p['metric'])} | {p['n']} | {mean} | {ci} | {pv} |")
        lines.append("")
    lines += ["## Runs", "", "| variant | seed | state | best epoch | epochs run | attempts | run folder |",
              "|---|---|---|---|---|---|---|"]
    for v in doc["variants"]:
        for r in v["runs"]:
            lines.append(f"| {v['key']} | {r['seed']} | {r['state']} | {r['best_epoch'] if r['best_epoch'] is not None else '–'} | "
                         f"{r['epochs_run'] if r['epochs_run'] is not None else '–'} | {r['attempts']} | {r['run_dir'] or '–'} |")
    lines.append("")
    if doc["failed"]:
        lines += ["## Failed", ""] + [f"- {f['key']} seed {f['seed']} ({f['attempts']} attempt(s)): {f['error']}"
                                      for f in doc["failed"]] + [""]
    if doc["pending"]:
        lines += ["## Not finished yet", ""] + [f"- {p['key']} seed {p['seed']}" for p in doc["pending"]] + [""]
    return "\n".join(lines)


def plot_results(doc: dict[str, Any], png: Path) -> Path:
    """Test metrics per variant as bars with ±1 sample-std error bars, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = doc["sweep"].get("task") or "regression"
    metrics = [m for m in CHART_METRICS[task] if any(m in v["test"] for v in doc["variants"])]
    keys = [v["key"] for v in doc["variants"]]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(2.2 + 2.0 * max(1, len(metrics)), 3.6 + 0.08 * len(keys)),
                             squeeze=False, constrained_layout=True)
    for ax, metric in zip(axes[0], metrics):
        means = [v["test"][metric]["mean"] if metric in v["test"] else float("nan") for v in doc["variants"]]
        stds = [v["test"][metric]["std"] if metric in v["test"] else float("nan") for v in doc["variants"]]
        stds = [0.0 if not math.isfinite(s) else s for s in stds]
        ax.bar(range(len(keys)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"test {DISPLAY_NAMES.get(metric, metric)}", fontsize=9)
    if not metrics:
        axes[0][0].text(0.5, 0.5, "no complete runs yet", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.suptitle(f"{doc['sweep']['study']}: mean ± std over seeds", fontsize=10)
    atomic_savefig(fig, png, dpi=110)
    plt.close(fig)
    return png
