"""``misalatch report``: one self-contained HTML page of a sweep, a ``train --seeds`` folder or a run.

The page holds the results table (mean ± sample std per variant and split, per-seed runs with best
epoch and epochs run), the paired comparison against the baseline (sweeps), a bar chart with error
bars, every run's training curves and prediction plots, and for feedback variants the mask plots —
read from a ``masks-<split>/`` folder when ``misalatch masks`` wrote one, otherwise computed in memory
from the run's best checkpoint (the page says which).

Self-contained and inert: images are embedded as base64 ``data:`` URIs, there is no script, no external
CSS or font, and a Content-Security-Policy forbids loading anything else. Everything taken from files
(ids, keys, errors, parameters) is untrusted and goes through ``html.escape``; images are only
embedded when their bytes start with the PNG signature.
"""

from __future__ import annotations

import base64
import csv
import html
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from misalatch.errors import ConfigError, MisalatchError
from misalatch.evaluation.report import format_mean_std, format_value, metric_label
from misalatch.io.progress import progress_bar
from misalatch.experiments.folders import (
    Results,
    RunRecord,
    Variant,
    config_differences,
    data_name,
    is_synthetic,
    read_json,
    read_results,
)

log = logging.getLogger(__name__)

GENERATOR = "misalatch report"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 16 * 1024 * 1024
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f0f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:.9em}.warn{background:#fff4e0;border-left:4px solid #e0a000;padding:.4em .8em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.3em 0}figure{display:inline-block;margin:.4em;vertical-align:top}
figcaption{font-size:.85em;color:#444}details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
code{background:#f4f4f4;padding:0 .2em}
#summary{background:#eaf2ff;border:1px solid #9bbbe8;padding:.5em 1em;margin:.8em 0}#summary table{margin:.3em 0}
details>summary{font-size:1.25em;margin-top:1em}details details>summary{font-size:1em}
"""
ONE_SEED = "n/a (1 seed)"  # what a statistic needing two seeds or more shows for one


def esc(value: Any) -> str:
    """Any value as HTML text, quotes included (safe inside attributes too)."""
    return html.escape(str(value), quote=True)


def redact_url(url: str) -> str:
    """A storage URL without its password (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", url)


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    caption: str
    png: bytes | None  # None: absent or refused, ``note`` says why
    note: str = ""


def read_png(path: Path, caption: str) -> Image:
    """A PNG file from a results folder, refused when missing, a link, too large or not a PNG."""
    if path.is_symlink():
        return Image(caption, None, f"{path.name} is a symbolic link; not embedded")
    if not path.is_file():
        return Image(caption, None, f"{path.name} not present")
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return Image(caption, None, f"{path.name} is larger than {MAX_IMAGE_BYTES} bytes; not embedded")
        data = path.read_bytes()
    except OSError as err:
        return Image(caption, None, f"{path.name}: cannot read ({err.strerror})")
    if not data.startswith(PNG_SIGNATURE):
        return Image(caption, None, f"{path.name} is not a PNG file; not embedded")
    return Image(caption, data)


def figure_image(fig: Any, caption: str) -> Image:
    from misalatch.evaluation.plots import figure_png

    return Image(caption, figure_png(fig, dpi=100))


def _img_html(image: Image) -> str:
    if image.png is None:
        return f'<figure><figcaption>{esc(image.caption)}: <span class="note">{esc(image.note)}</span></figcaption></figure>'
    data = base64.b64encode(image.png).decode("ascii")
    note = f' <span class="note">({esc(image.note)})</span>' if image.note else ""
    return (f'<figure><img alt="{esc(image.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(image.caption)}{note}</figcaption></figure>")


# ----------------------------------------------------------------------------------------------
# per-run pieces
# ----------------------------------------------------------------------------------------------
def _curves(run_dir: Path) -> Image:
    image = read_png(run_dir / "curves.png", "training curves")
    if image.png is not None or not (run_dir / "history.csv").is_file() or (run_dir / "history.csv").is_symlink():
        return image
    from misalatch.evaluation.plots import history_figure

    try:  # redraw from history.csv (a run from before curves.png existed)
        with open(run_dir / "history.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return Image("training curves", figure_image(history_figure(rows), "").png, "drawn from history.csv")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return Image("training curves", None, f"history.csv could not be plotted ({err})")


def _run_feedback(run_dir: Path) -> str:
    path = run_dir / "best.json"
    if not path.is_file():
        return "none"
    try:
        data = read_json(path)
        value = data.get("model_config", {}).get("feedback", "none") if isinstance(data, dict) else "none"
    except (MisalatchError, AttributeError):
        return "none"
    return value if isinstance(value, str) else "none"


def _masks_from_folder(folder: Path) -> tuple[list[Image], dict[str, Any] | None]:
    images = [read_png(folder / "mean_mask.png", "mean mask per feature")]
    heatmaps = folder / "heatmaps"
    if heatmaps.is_dir() and not heatmaps.is_symlink():
        for path in sorted(heatmaps.glob("*.png"))[:2]:
            images.append(read_png(path, f"heatmap {path.stem}"))
    summary = None
    if (folder / "summary.json").is_file():
        try:
            summary = read_json(folder / "summary.json")
        except MisalatchError:
            summary = None
    return images, summary if isinstance(summary, dict) else None


def _masks_in_memory(run_dir: Path, split: str, device: str,
                     trust_unverified: bool = False) -> tuple[list[Image], dict[str, Any]]:
    """What ``misalatch masks`` would export, kept in memory (nothing is written to the run folder)."""
    import io

    from misalatch.data.batching import iterate_batches
    from misalatch.evaluation.masks import collect_masks, plot_heatmap, plot_mean_mask, summarize
    from misalatch.training.run_dir import load_run

    run = load_run(run_dir, device=device, trust_unverified=trust_unverified)
    segments = run.dataset.splits.get(split, [])
    if not segments:
        raise MisalatchError(f"split {split!r} is empty")
    collected = collect_masks(run.model, iterate_batches(segments, run.spec, run.config.batch_size or 32),
                              device=run.device)
    images = []
    buffer = io.BytesIO()
    plot_mean_mask(collected, buffer)
    images.append(Image("mean mask per feature", buffer.getvalue()))
    buffer = io.BytesIO()
    plot_heatmap(collected, 0, buffer)
    images.append(Image(f"heatmap of segment {collected.ids[0]}", buffer.getvalue()))
    return images, summarize(collected)


def _mask_summary_table(summary: dict[str, Any]) -> str:
    modalities = summary.get("modalities")
    if not isinstance(modalities, dict):
        return ""
    rows = []
    for name, stats in modalities.items():
        if not isinstance(stats, dict):
            continue
        cells = "".join(f'<td class="num">{esc(_num(stats.get(k), 4))}</td>' for k in ("mean", "std", "min", "max", "gini"))
        rows.append(f"<tr><td>{esc(name)}</td>{cells}</tr>")
    return ('<table class="masks"><tr><th>modality</th><th>mean</th><th>std</th><th>min</th><th>max</th><th>Gini</th></tr>'
            + "".join(rows) + "</table>")


def _num(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return "NaN" if math.isnan(float(value)) else f"{float(value):.{digits}f}"


def _masks_of_run(run: RunRecord, split: str, compute: bool, device: str,
                  trust_unverified: bool = False) -> tuple[str, dict[str, Any] | None]:
    """(the HTML of one run's masks, its summary for the aggregate over seeds)."""
    assert run.run_dir is not None
    folder = run.run_dir / f"masks-{split}"
    exported = [p for p in [folder, *sorted(run.run_dir.glob("masks-*"))] if p.is_dir() and not p.is_symlink()]
    if exported:  # what `misalatch masks` wrote: this split's export first, else any other split's
        folder = exported[0]
        images, summary = _masks_from_folder(folder)
        source = f"read from {folder.name}/ (written by misalatch masks)"
    elif compute:
        try:
            images, summary = _masks_in_memory(run.run_dir, split, device, trust_unverified)
        except (MisalatchError, OSError, RuntimeError, ValueError) as err:  # the page is still worth having
            return f'<p class="note">masks: could not be computed ({esc(err)})</p>', None
        source = f"computed in memory from best.safetensors on the {split} split (no {folder.name}/ folder)"
    else:
        return f'<p class="note">masks: no {esc(folder.name)}/ folder (run <code>misalatch masks</code>)</p>', None
    table = _mask_summary_table(summary) if summary else ""
    return (f'<h4>feedback masks, seed {esc(run.seed)}</h4><p class="note">{esc(source)}</p>{table}'
            + "".join(_img_html(i) for i in images)), summary


MASK_STATS = ("mean", "std", "gini")


def masks_over_seeds(summaries: Sequence[dict[str, Any]]) -> str:
    """``<table class="masks-seeds">``: per modality, each mask statistic as mean ± sample std over the
    seeds' summaries ("n/a (1 seed)" for the std of one)."""
    per_modality: dict[str, list[dict[str, float]]] = {}
    for summary in summaries:
        modalities = summary.get("modalities")
        for name, stats in (modalities.items() if isinstance(modalities, dict) else ()):
            if isinstance(stats, dict):
                values = {k: float(stats[k]) for k in MASK_STATS
                          if isinstance(stats.get(k), (int, float)) and not isinstance(stats.get(k), bool)}
                per_modality.setdefault(str(name), []).append(values)
    if not per_modality:
        return ""
    rows = []
    for name, values in per_modality.items():
        cells = "".join(f'<td class="num" data-stat="{k}">{esc(_mean_std([v[k] for v in values if k in v], 4))}</td>'
                        for k in MASK_STATS)
        rows.append(f'<tr><td>{esc(name)}</td><td class="num">{len(values)}</td>{cells}</tr>')
    head = "".join(f"<th>{'Gini' if k == 'gini' else k}</th>" for k in MASK_STATS)
    return ('<table class="masks-seeds"><tr><th>modality</th><th>seeds</th>' + head + "</tr>" + "".join(rows) + "</table>")


def _mean_std(values: Sequence[float], digits: int) -> str:
    """mean ± sample std of ``values`` ("n/a (1 seed)" for the std of one value)."""
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{_num(mean, digits)} ± {ONE_SEED}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _run_section(run: RunRecord, *, masks: bool, compute_masks: bool, split: str,
                 device: str, trust_unverified: bool = False) -> tuple[str, dict[str, Any] | None]:
    if run.run_dir is None:
        return f'<p class="note">seed {esc(run.seed)}: the results file names no run folder inside this folder</p>', None
    if not run.run_dir.is_dir():
        return f'<p class="note">seed {esc(run.seed)}: run folder {esc(run.run_dir.name)} not present</p>', None
    images = [_curves(run.run_dir), read_png(run.run_dir / "scatter-test.png", "test: predicted vs true"),
              read_png(run.run_dir / "confusion-test.png", "test: confusion matrix")]
    images = [i for i in images if i.png is not None or "scatter" not in i.caption or run.test.get("mae") is not None]
    parts = [f"<h3>seed {esc(run.seed)} <span class=\"note\">({esc(run.run_dir.name)})</span></h3>",
             "".join(_img_html(i) for i in images)]
    summary = None
    if masks:
        section, summary = _masks_of_run(run, split, compute_masks, device, trust_unverified)
        parts.append(section)
    return "\n".join(parts), summary


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------
def _metric_names(variants: Sequence[Variant], split: str) -> list[str]:
    from misalatch.evaluation.metrics import CLASSIFICATION_KEYS, REGRESSION_KEYS

    present: dict[str, None] = {}
    for v in variants:
        for m in v.metrics.get(split, {}):
            present.setdefault(m, None)
    preferred = REGRESSION_KEYS + CLASSIFICATION_KEYS
    return [k for k in preferred if k in present] + [k for k in present if k not in preferred]


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def results_table(variants: Sequence[Variant], split: str) -> str:
    """``<table id="results-<split>">``: one row per variant; every metric cell carries its exact
    mean, std and n in ``data-`` attributes, next to the rounded display text."""
    names = _metric_names(variants, split)
    head = "".join(f"<th>{esc(metric_label(m))}</th>" for m in names)
    rows = []
    for v in variants:
        cells = []
        for m in names:
            stat = v.metrics.get(split, {}).get(m)
            if stat is None:
                cells.append('<td class="num">–</td>')
                continue
            cells.append(f'<td class="num" data-metric="{esc(m)}" data-mean="{esc(repr(stat.mean))}" '
                         f'data-std="{esc(repr(stat.std))}" data-n="{stat.n}">'
                         f"{esc(format_mean_std(m, stat.mean, stat.std, stat.n))}</td>")
        rows.append(f'<tr data-variant="{esc(v.key)}"><td>{esc(v.key)}</td><td>{esc(_params_text(v.params))}</td>'
                    f'<td class="num">{v.n}</td><td>{esc(" ".join(map(str, v.seeds)))}</td>{"".join(cells)}</tr>')
    return (f'<table id="results-{esc(split)}"><tr><th>variant</th><th>parameters</th><th>n</th><th>seeds</th>{head}</tr>'
            + "".join(rows) + "</table>")


def runs_table(variants: Sequence[Variant], split: str = "test") -> str:
    names = [m for m in _metric_names(variants, split)][:8]
    head = "".join(f"<th>{esc(split)} {esc(metric_label(m))}</th>" for m in names)
    rows = []
    for v in variants:
        for r in v.runs:
            values = getattr(r, split)
            cells = "".join(f'<td class="num">{esc(format_value(m, values[m])) if m in values else "–"}</td>' for m in names)
            error = f"<td>{esc(r.error)}</td>" if r.error else "<td></td>"
            rows.append(f"<tr><td>{esc(v.key)}</td><td class=\"num\">{esc(r.seed)}</td><td>{esc(r.state)}</td>"
                        f'<td class="num">{esc(r.best_epoch if r.best_epoch is not None else "–")}</td>'
                        f'<td class="num">{esc(r.epochs_run if r.epochs_run is not None else "–")}</td>{cells}{error}</tr>')
    return ('<table id="runs"><tr><th>variant</th><th>seed</th><th>state</th><th>best epoch</th><th>epochs run</th>'
            f"{head}<th>error</th></tr>" + "".join(rows) + "</table>")


def paired_table(results: Results) -> str:
    if not results.paired:
        return ""
    rows = []
    for p in results.paired:
        diffs = " ".join(format_value(p.metric, d) for d in p.differences)
        rows.append(
            f'<tr data-variant="{esc(p.variant)}" data-metric="{esc(p.metric)}" data-split="{esc(p.split)}" '
            f'data-mean="{esc(repr(p.mean))}" data-p="{esc(repr(p.p_value))}">'
            f"<td>{esc(p.variant)}</td><td>{esc(p.baseline)}</td><td>{esc(p.split)}</td><td>{esc(metric_label(p.metric))}</td>"
            f'<td class="num">{p.n}</td><td class="num">{esc(format_value(p.metric, p.mean))}</td>'
            f'<td class="num">{esc(_ci_text(p))}</td>'
            f'<td class="num">{esc(ONE_SEED if p.n < 2 else _p_text(p.p_value))}</td><td>{esc(p.test)}</td>'
            f'<td>{esc(diffs)}</td></tr>')
    return ('<table id="paired"><tr><th>variant</th><th>baseline</th><th>split</th><th>metric</th><th>n</th>'
            "<th>mean difference</th><th>95 % CI</th><th>p-value</th><th>test</th><th>per-seed differences</th></tr>"
            + "".join(rows) + "</table>")


def _ci_text(p: Any) -> str:
    """``[low, high]`` of a paired row; one seed has no interval."""
    if p.n < 2:
        return ONE_SEED
    if any(math.isnan(float(v)) for v in p.ci95):
        return "n/a"
    return f"[{format_value(p.metric, p.ci95[0])}, {format_value(p.metric, p.ci95[1])}]"


def _p_text(p: float) -> str:
    if math.isnan(p):
        return "NaN"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------
def _bar_chart(results: Results, split: str) -> str:
    from misalatch.experiments.compare import Comparison, ComparisonRow, bar_chart

    rows = tuple(ComparisonRow(str(results.path), "run" if results.kind != "sweep" else "variant", v.key, v.params,
                               tuple(v.seeds), dict(v.metrics.get(split, {}))) for v in results.variants)
    names = tuple(_metric_names(results.variants, split))
    if not rows or not names:
        return ""
    return _img_html(figure_image(bar_chart(Comparison(split, names, rows)), f"{split} split, mean ± sample std"))


def config_table(differs: dict[str, tuple[Any, Any]]) -> str:
    rows = "".join(f'<tr data-field="{esc(k)}"><td><code>{esc(k)}</code></td><td>{esc(v)}</td><td>{esc(d)}</td></tr>'
                   for k, (v, d) in differs.items())
    return f'<table id="config"><tr><th>setting</th><th>value</th><th>default</th></tr>{rows}</table>'


def _lower_is_better(metric: str) -> bool:
    return metric == "mae"


def summary_block(results: Results, synthetic: bool) -> str:
    """The first screen: what data, how many runs, and the best variant on the main test metric."""
    complete = sum(1 for v in results.variants for r in v.runs if r.state == "complete")
    facts = [("data", "SYNTHETIC (generated, says nothing about real sentiment)" if synthetic else data_name(results)),
             ("folder", f"{results.kind}: {results.path}"),
             ("variants", str(len(results.variants))),
             ("runs", f"{complete} complete, {len(results.failed)} failed, {len(results.pending)} pending")]
    names = _metric_names(results.variants, "test")
    if names:
        metric = names[0]
        scored = [(v, v.metrics["test"][metric]) for v in results.variants if metric in v.metrics.get("test", {})
                  and not math.isnan(v.metrics["test"][metric].mean)]
        if scored:
            best, stat = (min if _lower_is_better(metric) else max)(scored, key=lambda item: item[1].mean)
            facts.append((f"best on test {metric_label(metric)}",
                          f"{best.key}: {format_mean_std(metric, stat.mean, stat.std, stat.n)}"
                          + (f" ({ONE_SEED})" if stat.n < 2 else f" (n = {stat.n})")))
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    return f'<section id="summary"><strong>Summary</strong><table>{rows}</table></section>'


def _fold(title: str, body: str, *, open_: bool, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<details{ident}{' open' if open_ else ''}><summary>{esc(title)}</summary>{body}</details>"


def build_report(path: str | Path, *, masks: bool = True, compute_masks: bool = True, mask_split: str = "test",
                 device: str = "cpu", trust_unverified: bool = False) -> str:
    """The HTML page of the results in ``path`` (a sweep, ``train --seeds`` or run folder).

    The first screen holds a summary (what data, how many runs, the best variant) and the results
    table; the rest is folded into ``<details>`` sections. Feedback masks are summarised over every
    seed of a variant; a statistic that needs two seeds says ``n/a (1 seed)``.
    """
    import misalatch
    from misalatch.experiments.compare import verify_runs

    results = read_results(path)
    verify_runs(results, trust_unverified=trust_unverified)
    synthetic = is_synthetic(results)
    title = f"misalatch report{' [SYNTHETIC data]' if synthetic else ''}: {results.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        f'<meta name="generator" content="{esc(GENERATOR)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">{esc(results.kind)} folder <code>{esc(results.path)}</code>; generated '
        f'{esc(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} by misalatch {esc(misalatch.__version__)}.</p>',
    ]
    if synthetic:
        parts.append('<p class="warn">SYNTHETIC data: these numbers say nothing about real sentiment analysis.</p>')
    parts.append(summary_block(results, synthetic))
    results_body = ['<p class="note">mean ± sample standard deviation (ddof = 1) over seeds; accuracies and F1 in %, '
                    "MAE and Corr as numbers; a single run has no std.</p>"]
    for split, shown in (("test", "test"), ("validation", "valid")):
        results_body.append(f"<h3>{esc(shown)} split</h3>{results_table(results.variants, split)}")
    results_body.append(_bar_chart(results, "test"))
    parts.append(_fold("Results", "".join(results_body), open_=True, anchor="results"))
    differs, source = config_differences(results)
    note = (f'<p class="note">the resolved configuration of {esc(source)} where it differs from the defaults'
            + ("; the variants also differ in the parameters column of the results" if results.kind == "sweep" else "")
            + ".</p>")
    parts.append(_fold("Configuration", note + (config_table(differs) if differs else
                                                '<p class="note">every setting at its default.</p>'),
                       open_=True, anchor="configuration"))
    if results.meta:
        meta = dict(results.meta)
        if isinstance(meta.get("storage"), str):
            meta["storage"] = redact_url(meta["storage"])
        parts.append(_fold("Sweep", "<table id=\"sweep\">" + "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in meta.items()) + "</table>", open_=False))
    if results.paired:
        parts.append(_fold("Paired comparison", '<p class="note">per seed: variant − baseline; mean with its 95 % '
                           "confidence interval and the p-value of the paired test named in each row.</p>"
                           + paired_table(results), open_=True, anchor="paired-comparison"))
    parts.append(_fold("Runs", runs_table(results.variants), open_=False, anchor="runs"))
    if results.failed:
        parts.append("<h2>Failed</h2><ul id=\"failed\">" + "".join(
            f"<li>{esc(', '.join(f'{k}: {v}' for k, v in f.items()))}</li>" for f in results.failed) + "</ul>")
    if results.pending:
        parts.append("<h2>Pending</h2><p class=\"note\">not finished by any worker yet:</p><ul id=\"pending\">" + "".join(
            f"<li>{esc(', '.join(f'{k}: {v}' for k, v in p.items()))}</li>" for p in results.pending) + "</ul>")
    sections = []
    bar = progress_bar(len(results.variants), "report", unit="variant")
    for v in results.variants:
        runs = [r for r in v.runs if r.state == "complete"]
        with_masks = masks and any(r.run_dir is not None and _run_feedback(r.run_dir) != "none" for r in runs)
        body, summaries = [], []
        for run in runs:  # masks of every seed: the table below aggregates them
            html_part, summary = _run_section(run, masks=with_masks, compute_masks=compute_masks, split=mask_split,
                                              device=device, trust_unverified=trust_unverified)
            body.append(html_part)
            if summary is not None:
                summaries.append(summary)
        head = ""
        if with_masks and summaries:
            head = (f'<h4>feedback masks over {len(summaries)} seed{"s" if len(summaries) != 1 else ""}</h4>'
                    '<p class="note">per modality: each seed\'s mask statistic, mean ± sample std over seeds.</p>'
                    + masks_over_seeds(summaries))
        sections.append(_fold(f'{v.key} ({len(runs)} run{"s" if len(runs) != 1 else ""})', head + "\n".join(body),
                              open_=False))
        bar.update()
    bar.close()
    parts.append(_fold("Curves, predictions and masks", "".join(sections), open_=False, anchor="curves"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _is_our_report(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def write_report(page: str, out: str | Path) -> Path:
    """Write the page atomically; an existing file is only replaced when it is a misalatch report."""
    from misalatch.io.atomic import atomic_write_text
    from misalatch.io.owned import record_written

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; --out is the HTML file to write (e.g. {out / 'report.html'})")
    if out.exists() and not _is_our_report(out):
        raise ConfigError(f"{out}: exists and is not a report misalatch wrote; refusing to overwrite it "
                          "(choose another --out)")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder for --out")
    if out.is_symlink():
        raise ConfigError(f"{out}: is a symbolic link; misalatch does not write through links")
    record_written(out)  # e.g. RUN_DIR/report.html: listed in the run folder's marker
    atomic_write_text(out, page)
    return out


def report(path: str | Path, out: str | Path, **options: Any) -> Path:
    """Build the page of ``path`` and write it to ``out``; see ``build_report`` for ``options``."""
    return write_report(build_report(path, **options), out)


__all__ = ["build_report", "write_report", "report", "redact_url"]
