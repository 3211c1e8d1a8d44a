"""Runs and sweeps side by side: one table (Markdown / CSV) and a bar chart with error bars.

Each folder given is read with ``misalatch.experiments.folders.read_results``; every variant of
a sweep, a ``train --seeds`` folder and a single run become one row each, so a published sweep can
be put next to the run you trained this morning. Means and sample standard deviations (ddof = 1)
come from the per-seed values; a single run has no std (shown without "±", no error bar).

Above the table every rendering says what data the runs are on (SYNTHETIC when so) and which resolved
settings differ from the defaults (``folders.config_differences``, as ``misalatch report`` shows them):
once when every row shares them, and per run / variant where they differ.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from misalatch.errors import ConfigError
from misalatch.evaluation.metrics import CLASSIFICATION_KEYS, REGRESSION_KEYS
from misalatch.evaluation.report import format_mean_std, metric_label
from misalatch.experiments.folders import (
    Results,
    Stat,
    config_differences,
    data_name,
    is_synthetic,
    read_results,
    settings_text,
)

COMPARISON_FORMAT = "misalatch-comparison"
OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.png", "comparison.json")
CHART_METRICS = {"regression": ("mae", "corr", "acc2_non0", "acc7"), "classification": ("acc", "f1")}


@dataclass(frozen=True)
class ComparisonRow:
    source: str  # the folder as given
    kind: str  # run | seeds | sweep
    variant: str
    params: dict[str, Any]
    seeds: tuple[int, ...]
    metrics: dict[str, Stat]  # of the chosen split
    data: str = ""  # the data's name, as the runs' metrics.json says
    settings: dict[str, tuple[Any, Any]] | None = field(default_factory=dict)
    """field -> (value, default) of the resolved configuration where it differs from the defaults;
    None when no config.yaml could be read (``settings_source`` says why)."""
    settings_source: str = ""

    @property
    def label(self) -> str:
        return self.variant if self.kind != "sweep" else f"{Path(self.source).name}/{self.variant}"

    @property
    def n(self) -> int:
        return max((s.n for s in self.metrics.values()), default=0)


@dataclass(frozen=True)
class Comparison:
    split: str
    metrics: tuple[str, ...]
    rows: tuple[ComparisonRow, ...]
    synthetic: tuple[str, ...] = ()  # the folders (as given) whose runs trained on SYNTHETIC data


def _default_metrics(results: Sequence[Results], split: str) -> tuple[str, ...]:
    present: dict[str, None] = {}
    for r in results:
        for v in r.variants:
            for name in v.metrics.get(split, {}):
                present.setdefault(name, None)
    preferred = REGRESSION_KEYS + CLASSIFICATION_KEYS
    return tuple([k for k in preferred if k in present] + [k for k in present if k not in preferred])


_SPLIT_KEYS = {"valid": "validation", "validation": "validation", "test": "test"}  # split name -> metrics key


def verify_runs(results: Results, *, trust_unverified: bool = False) -> None:
    """Each finished run's checkpoint set against its manifest: the metrics shown are those of
    weights that are still intact. Without ``trust_unverified`` a run without a manifest is refused
    (``misalatch.training.checkpoint.verify_manifest``)."""
    from misalatch.training.checkpoint import verify_manifest

    if trust_unverified:
        return
    for variant in results.variants:
        for run in variant.runs:
            if run.state == "complete" and run.run_dir is not None and run.run_dir.is_dir():
                verify_manifest(run.run_dir, "best")


def compare(paths: Sequence[str | Path], *, split: str = "test", metrics: Sequence[str] | None = None,
            trust_unverified: bool = False) -> Comparison:
    """Read every folder and line their variants up on ``split`` ("valid" or "test"; "validation" is
    accepted for "valid", the name every command uses); every run's checkpoint is verified first
    (``verify_runs``)."""
    if split not in _SPLIT_KEYS:
        raise ConfigError(f"split {split!r}: expected valid or test")
    split, key = ("valid" if split == "validation" else split), _SPLIT_KEYS[split]
    if not paths:
        raise ConfigError("compare: give at least one run or sweep folder")
    results = [read_results(p) for p in paths]
    for result in results:
        verify_runs(result, trust_unverified=trust_unverified)
    chosen = tuple(metrics) if metrics else _default_metrics(results, key)
    known = set(_default_metrics(results, key))
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ConfigError(f"--metrics: {', '.join(unknown)} not in any of the results (have {', '.join(sorted(known))})")
    rows = []
    for given, result in zip(paths, results):
        data = data_name(result)
        for variant in result.variants:
            settings, source = config_differences(result, variant)
            rows.append(ComparisonRow(str(given), result.kind, variant.key, dict(variant.params),
                                      tuple(variant.seeds), dict(variant.metrics.get(key, {})), data, settings, source))
    synthetic = tuple(str(given) for given, result in zip(paths, results) if is_synthetic(result))
    return Comparison(split, chosen, tuple(rows), synthetic)


# ----------------------------------------------------------------------------------------------
# renderings
# ----------------------------------------------------------------------------------------------
def _cell(row: ComparisonRow, metric: str) -> str:
    stat = row.metrics.get(metric)
    return "–" if stat is None else format_mean_std(metric, stat.mean, stat.std, stat.n)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def shared_settings(comparison: Comparison) -> dict[str, tuple[Any, Any]]:
    """The changed settings every row has, with the same value (empty when a row's are unknown)."""
    known = [r.settings for r in comparison.rows]
    if not known or any(s is None for s in known):
        return {}
    first, *others = [s for s in known if s is not None]
    return {k: v for k, v in first.items() if all(o.get(k) == v for o in others)}


def _line(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def header_lines(comparison: Comparison) -> list[str]:
    """What the table is about, in Markdown: the data of each folder and the settings that differ from
    the defaults (shared ones once, the rest per run / variant)."""
    by_source = {r.source: r.data for r in comparison.rows}

    def shown(source: str) -> str:
        return by_source[source] + (" (SYNTHETIC)" if source in comparison.synthetic else "")

    if len({shown(s) for s in by_source}) == 1:
        lines = [_line(f"Data: {shown(next(iter(by_source)))}."), ""]
    else:
        lines = [_line("Data: " + "; ".join(f"`{s}`: {shown(s)}" for s in by_source) + "."), ""]
    shared = shared_settings(comparison)
    if shared:
        lines += [_line(f"Settings that differ from the defaults (every run): {settings_text(shared)}."), ""]
    rest = [None if row.settings is None else {k: v for k, v in row.settings.items() if k not in shared}
            for row in comparison.rows]
    if all(r == {} for r in rest):
        return lines if shared else [*lines, "Settings: every training setting at its default (every run).", ""]
    own = []
    for row, mine in zip(comparison.rows, rest):
        text = (f"settings unknown ({row.settings_source})" if mine is None
                else settings_text(mine) if mine else "no other setting changed" if shared
                else "every setting at its default")
        own.append(_line(f"- `{row.label}`: {text}"))
    head = "Settings that differ from the defaults" + (", besides those" if shared else "") + ", per run / variant:"
    return [*lines, head, "", *own, ""]


def to_markdown(comparison: Comparison) -> str:
    """A Markdown table: one row per run / variant, ``mean ± std`` per metric, n and seeds; above it the
    data (SYNTHETIC when so) and the settings that differ from the defaults."""
    header = ["run / variant", "kind", *[metric_label(m) for m in comparison.metrics], "n", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in comparison.rows:
        cells = [_md_escape(row.label), row.kind, *[_cell(row, m) for m in comparison.metrics], str(row.n),
                 " ".join(str(s) for s in row.seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\n{comparison.split} split; mean ± sample std (ddof = 1) over seeds; accuracies and F1 in %, "
            "a single run has no std.\n")
    head = ""
    if comparison.synthetic:
        every = len(comparison.synthetic) == len({r.source for r in comparison.rows})
        head = (f"**SYNTHETIC data** ({'every folder' if every else ', '.join(comparison.synthetic)}): "
                "these numbers say nothing about real sentiment analysis.\n\n")
    return head + "\n".join(header_lines(comparison)) + "\n" + "\n".join(lines) + "\n" + note


def to_csv(comparison: Comparison) -> str:
    """Unrounded values: source, kind, variant, split, n, seeds, ``<metric>_mean`` / ``_std``, then data,
    synthetic and the changed settings (``field=value (default d); ...``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "kind", "variant", "split", "n", "seeds",
                     *[f"{m}_{s}" for m in comparison.metrics for s in ("mean", "std")], "data", "synthetic",
                     "changed_settings"])
    for row in comparison.rows:
        values = []
        for m in comparison.metrics:
            stat = row.metrics.get(m)
            values += ["", ""] if stat is None else [repr(stat.mean), repr(stat.std)]
        settings = ("unknown" if row.settings is None
                    else "; ".join(f"{k}={v} (default {d})" for k, (v, d) in row.settings.items()))
        writer.writerow([row.source, row.kind, row.variant, comparison.split, row.n,
                         " ".join(str(s) for s in row.seeds), *values, row.data,
                         str(row.source in comparison.synthetic).lower(), settings])
    return buffer.getvalue()


def to_json(comparison: Comparison) -> dict[str, Any]:
    def stat(s: Stat) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"mean": clean(s.mean), "std": clean(s.std), "n": s.n, "values": [clean(v) for v in s.values]}

    return {"format": COMPARISON_FORMAT, "version": 1, "split": comparison.split, "metrics": list(comparison.metrics),
            "synthetic": list(comparison.synthetic),
            "rows": [{"source": r.source, "kind": r.kind, "variant": r.variant, "params": r.params,
                      "seeds": list(r.seeds), "metrics": {m: stat(s) for m, s in r.metrics.items()},
                      "data": r.data, "synthetic": r.source in comparison.synthetic,
                      "changed_settings": None if r.settings is None else
                      {k: {"value": v, "default": d} for k, (v, d) in r.settings.items()},
                      "settings_source": r.settings_source}
                     for r in comparison.rows]}


def chart_metrics(comparison: Comparison) -> tuple[str, ...]:
    task = "classification" if "acc" in comparison.metrics and "mae" not in comparison.metrics else "regression"
    preferred = [m for m in CHART_METRICS[task] if m in comparison.metrics]
    return tuple(preferred or comparison.metrics[:4])


def bar_chart(comparison: Comparison, metrics: Sequence[str] | None = None) -> Any:
    """A matplotlib Figure: one panel per metric, one bar per row, error bars = sample std."""
    import numpy as np

    from misalatch.evaluation.plots import new_figure

    chosen = tuple(metrics) if metrics else chart_metrics(comparison)
    rows = comparison.rows
    fig = new_figure(max(4.0, 3.2 * len(chosen)), 3.4 + 0.12 * max(len(r.label) for r in rows))
    axes = np.atleast_1d(fig.subplots(1, len(chosen)))
    colours = [f"C{i % 10}" for i in range(len(rows))]
    for ax, metric in zip(axes, chosen):
        scale = 100.0 if metric.startswith(("acc", "f1")) else 1.0
        means = [scale * r.metrics[metric].mean if metric in r.metrics else np.nan for r in rows]
        errors = [scale * r.metrics[metric].std if metric in r.metrics and r.metrics[metric].n > 1 else 0.0
                  for r in rows]
        errors = [0.0 if math.isnan(e) else e for e in errors]
        ax.bar(range(len(rows)), means, yerr=errors, capsize=3, color=colours)
        ax.set_xticks(range(len(rows)), [r.label for r in rows], rotation=45, ha="right", fontsize=8)
        ax.set_title(metric_label(metric), fontsize=10)
        finite = [m for m in means if not math.isnan(m)]
        if finite and metric.startswith(("acc", "f1")):
            ax.set_ylim(max(0.0, min(finite) - 15.0), min(100.0, max(finite) + 10.0))
    synthetic = "SYNTHETIC data: " if comparison.synthetic else ""
    fig.suptitle(f"{synthetic}{comparison.split} split, mean ± sample std over seeds", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# output folder (never a user's files)
# ----------------------------------------------------------------------------------------------
def write_comparison(comparison: Comparison, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """``comparison.md``, ``.csv``, ``.png`` and ``.json`` in a new folder ``out`` (an owned output
    folder: with ``overwrite`` an earlier comparison is replaced, a folder of yours never is)."""
    from misalatch.evaluation.plots import figure_png
    from misalatch.io.owned import claim_output

    chart = figure_png(bar_chart(comparison))  # everything computed before the folder is claimed
    with claim_output(out, "compare", overwrite=overwrite) as output:
        output.write_text("comparison.md", to_markdown(comparison))
        output.write_text("comparison.csv", to_csv(comparison))
        output.write_bytes("comparison.png", chart)
        output.write_json("comparison.json", to_json(comparison), default=str)
    return {name: Path(out) / name for name in OUTPUT_FILES}
