"""Real acoustic and visual signal: CMU-MOSI utterance-level features (Poria et al. 2017), one sweep.

The features in ``../shared/data/mosi-bclstm/`` (see its README) are one vector per utterance and
modality — text 100, acoustic 73, visual 100 — with their own speaker-independent split (62 training
videos / 31 test videos). This script

1. writes them as a per-utterance table (``segment_id, split, text_*, acoustic_*, visual_*``), the
   layout any user with their own utterance features would write, and reads it with
   ``misalatch prepare --format utterances`` with the continuous labels of
   ``../shared/data/mosi/mosi_text_labels.csv`` joined by segment id and a validation hold-out of
   whole training speakers (``--valid-fraction``, seeded): train on the rest of the 1,447, select on
   the held-out speakers, test once on the 752;
2. computes the ridge reference on the same split (standardised features, closed form): exactly as
   given in issue 19 (fit on all 1,447, alpha 1000 for t+a+v, 100 for t), and the same ridge with
   its alpha chosen on this script's validation speakers and fit on the remaining training rows
   (the data the networks see);
3. runs ONE ``misalatch sweep`` (``--variants``) with 5 seeds per variant: MISA on t, t+a, t+v, t+a+v,
   every feedback variant on t+a+v, and ``--model mmlatch`` (its own recipe), and adds the paired
   comparisons the question needs (t+a, t+v, t+a+v against t; every variant against MISA t+a+v).

    python benchmarks/mosi_bclstm.py --out bench/mosi-bclstm            # the full table (~30 min, 2 cores)
    python benchmarks/mosi_bclstm.py --quick --out /tmp/bclstm-quick    # 1 seed, 2 epochs: the plumbing

Writes ``table.csv``, ``prepared/``, ``ridge.json``, ``sweep/`` (run folders, results.{json,md,csv}),
``benchmark.json`` (every per-seed value, the paired tests) and ``benchmark.md`` into ``--out``.
Run it from the repository root with misalatch importable (``pip install -e .`` or ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / ".." / "shared" / "data" / "mosi-bclstm"
LABELS = REPO / ".." / "shared" / "data" / "mosi" / "mosi_text_labels.csv"
SEEDS = (1111, 1112, 1113, 1114, 1115)
VALID_FRACTION = 0.2  # of the 62 training speakers' utterances, whole speakers at a time
VALID_SEED = 0
FORMAT = "misalatch-benchmark-mosi-bclstm"
#: The ridge reference of issue 19 (standardised features, fit on all 1,447 training utterances).
GIVEN_RIDGE = {"tav": {"alpha": 1000.0, "mae": 0.946, "corr": 0.627, "acc2_non0": 0.785, "acc7": 0.314},
               "t": {"alpha": 100.0, "mae": 0.953, "corr": 0.604, "acc2_non0": 0.773}}
ALPHAS = tuple(10.0 ** k for k in range(-2, 5))
#: Settings of every MISA variant on these per-utterance features, chosen on the validation speakers
#: only (docs/results.md says how); the feedback variants and MISA share them, so pairs differ in
#: one thing. --model mmlatch keeps its own recipe (the original's), only the data flags are shared.
MISA_SETTINGS: dict[str, Any] = {"hidden_size": 64, "dropout": 0.3, "lr": 0.001, "batch_size": 64, "loss": "l1",
                                 "patience": 10, "max_epochs": 60}
#: The validation search behind MISA_SETTINGS (seed 1111, MISA t+a+v; validation MAE, lower is better).
TUNING = (
    ({"loss": "mse", "hidden_size": 128, "dropout": 0.5, "lr": 0.0001, "batch_size": 64}, 0.693),  # MISA's MOSI defaults
    ({"loss": "l1", "hidden_size": 128, "dropout": 0.5, "lr": 0.0001, "batch_size": 64}, 0.699),
    ({"loss": "mse", "hidden_size": 64, "dropout": 0.3, "lr": 0.001, "batch_size": 32}, 0.688),
    ({"loss": "l1", "hidden_size": 64, "dropout": 0.3, "lr": 0.001, "batch_size": 32}, 0.672),
    ({"loss": "mse", "hidden_size": 64, "dropout": 0.5, "lr": 0.0003, "batch_size": 32}, 0.693),
    ({"loss": "l1", "hidden_size": 64, "dropout": 0.5, "lr": 0.0003, "batch_size": 64}, 0.705),
    ({"loss": "l1", "hidden_size": 32, "dropout": 0.5, "lr": 0.001, "batch_size": 64}, 1.289),  # stalled
    ({"loss": "l1", "hidden_size": 64, "dropout": 0.3, "lr": 0.001, "batch_size": 64}, 0.667),  # chosen
)
VARIANTS: dict[str, dict[str, Any]] = {
    "misa-t": {"modalities": "t", "feedback": "none"},
    "misa-ta": {"modalities": "ta", "feedback": "none"},
    "misa-tv": {"modalities": "tv", "feedback": "none"},
    "misa-tav": {"modalities": "tav", "feedback": "none"},
    "sequence-tav": {"modalities": "tav", "feedback": "sequence"},
    "sequence-mlp-tav": {"modalities": "tav", "feedback": "sequence-mlp"},
    "static-tav": {"modalities": "tav", "feedback": "static"},
    "static-projected-tav": {"modalities": "tav", "feedback": "static-projected"},
}
BASELINE = "misa-tav"
MODALITY_PAIRS = (("misa-ta", "misa-t"), ("misa-tv", "misa-t"), ("misa-tav", "misa-t"))
METRICS = ("mae", "corr", "acc2_non0", "f1_non0", "acc7")

log = logging.getLogger("mosi_bclstm")


def _sibling(name: str) -> Any:
    """Another benchmark script of this folder as a module (the ridge of ``mosi_text.py``)."""
    spec = importlib.util.spec_from_file_location(f"misalatch_benchmark_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# 1. the per-utterance table
# ----------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[list[str]]:
    """A release CSV: no header, every field quoted, some rows end with a trailing comma."""
    with path.open(newline="") as handle:
        rows = [row[:-1] if row and row[-1] == "" else row for row in csv.reader(handle)]
    if not rows:
        raise SystemExit(f"{path}: empty")
    return rows


def build_table(source: Path, out: Path) -> dict[str, Any]:
    """``segment_id, split, text_0..99, acoustic_0..72, visual_0..99`` for all 2,199 utterances.

    Row *i* of ``audio_<split>0.csv`` / ``video_<split>0.csv`` belongs to row *i* of
    ``text_<split>.csv``, whose first field indexes ``transcripts.csv`` (README). The binary labels of
    the release are kept aside to check the alignment against the continuous labels (label >= 0)."""
    transcripts = _rows(source / "transcripts.csv")
    ids = [row[0] for row in transcripts]
    header: list[str] | None = None
    lines: list[list[str]] = []
    binary: dict[str, int] = {}
    for split in ("train", "test"):
        text = _rows(source / f"text_{split}.csv")
        audio = _rows(source / f"audio_{split}0.csv")
        video = _rows(source / f"video_{split}0.csv")
        if not len(text) == len(audio) == len(video):
            raise SystemExit(f"{source}: {split} files differ in length ({len(text)}, {len(audio)}, {len(video)})")
        for t, a, v in zip(text, audio, video):
            seg = ids[int(t[0])]
            if a[-1] != v[-1]:
                raise SystemExit(f"{source}: {seg}: the acoustic and visual files disagree on the binary label")
            binary[seg] = int(float(a[-1]))
            features = {"text": t[1:], "acoustic": a[:-1], "visual": v[:-1]}
            if header is None:
                header = ["segment_id", "split"] + [f"{m}_{j}" for m, f in features.items() for j in range(len(f))]
            row = [seg, split, *features["text"], *features["acoustic"], *features["visual"]]
            if len(row) != len(header):
                raise SystemExit(f"{source}: {seg}: {len(row)} fields, expected {len(header)}")
            lines.append(row)
    assert header is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    return {"rows": len(lines), "columns": header, "binary": binary}


def prepare(table: Path, labels: Path, out: Path) -> Any:
    """``misalatch prepare --format utterances`` as a library call; returns the dataset."""
    from misalatch.data.cache import save_prepared
    from misalatch.data.readers.utterance_table import read_utterance_table

    ds = read_utterance_table(table, labels=labels, valid_fraction=VALID_FRACTION, valid_seed=VALID_SEED,
                              name="mosi-bclstm")
    if not out.exists():  # a sweep that continues reads the folder it started with (same table, same fingerprint)
        save_prepared(ds, out)
    return ds


# ----------------------------------------------------------------------------------------------
# 2. ridge
# ----------------------------------------------------------------------------------------------
def _matrix(ds: Any, split: str, modalities: str) -> tuple[np.ndarray, np.ndarray]:
    attrs = {"t": "text_vectors", "a": "acoustic", "v": "visual"}
    segs = ds.splits[split]
    x = np.hstack([np.concatenate([getattr(s, attrs[m]) for s in segs]) for m in modalities]).astype(np.float64)
    return x, np.array([s.label for s in segs], dtype=np.float64)


def ridge_reference(ds: Any) -> dict[str, Any]:
    """The issue's ridge (alpha given, fit on train + valid = the 1,447) and the validation-chosen one."""
    from misalatch.evaluation.metrics import compute_metrics

    ridge = _sibling("mosi_text")
    out: dict[str, Any] = {}
    for modalities in ("t", "ta", "tv", "tav"):
        train, valid, test = (_matrix(ds, s, modalities) for s in ("train", "valid", "test"))
        # the features were standardised with the statistics of ``train``; the ridge saw the
        # 1,447 standardised with their own statistics, so re-standardise the union for it
        full_x = np.vstack([train[0], valid[0]])
        mean, std = full_x.mean(axis=0), full_x.std(axis=0)
        std[std < 1e-12] = 1.0
        entry: dict[str, Any] = {}
        if modalities in GIVEN_RIDGE:
            alpha = GIVEN_RIDGE[modalities]["alpha"]
            w, b = ridge.ridge_fit((full_x - mean) / std, np.concatenate([train[1], valid[1]]), alpha)
            entry["given"] = {"alpha": alpha, "fit_on": "train+valid (1,447)",
                              "test": compute_metrics("regression", ((test[0] - mean) / std) @ w + b, test[1])}
        alpha, path = ridge.ridge_select(train, valid, ALPHAS)
        w, b = ridge.ridge_fit(*train, alpha)
        entry["selected"] = {"alpha": alpha, "fit_on": "train (valid speakers held out)", "alpha_path": path,
                             "test": compute_metrics("regression", test[0] @ w + b, test[1])}
        out[modalities] = entry
    return out


# ----------------------------------------------------------------------------------------------
# 3. the sweep
# ----------------------------------------------------------------------------------------------
def variants(quick: bool) -> dict[str, dict[str, Any]]:
    named = {name: {**MISA_SETTINGS, **settings} for name, settings in VARIANTS.items()}
    named["mmlatch"] = {"model": "mmlatch", "modalities": "tav"}
    if quick:
        named = {k: {**v, "max_epochs": 2} for k, v in named.items()}
    return named


def run_sweep(prepared: Path, out: Path, seeds: Sequence[int], quick: bool, summarize: bool = False) -> dict[str, Any]:
    """The sweep (re-running the same command continues it: finished runs are kept); ``summarize``
    only writes the results of the runs finished so far."""
    from misalatch.cli import main as cli_main

    variants_file = out.with_name(out.name + "-variants.yaml")
    variants_file.write_text(yaml.safe_dump(variants(quick), sort_keys=False))
    code = cli_main(["sweep", "--out", str(out), "--variants", str(variants_file), "--baseline", BASELINE,
                     "--seeds", ",".join(map(str, seeds)), "--data", str(prepared), "--device", "cpu",
                     *(["--summarize"] if summarize else [])])
    if code != 0:
        raise SystemExit(f"the sweep failed (exit {code}); see {out}")
    return json.loads((out / "results.json").read_text())


def paired_tables(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's own comparisons (every variant against MISA t+a+v) plus the modality pairs."""
    from misalatch.experiments.stats import paired_comparison

    by_key = {v["key"]: v for v in results["variants"]}
    rows = [p for p in results["paired"] if p["metric"] in METRICS]
    for variant, baseline in MODALITY_PAIRS:
        for metric in METRICS:
            mine = {r["seed"]: r["test"][metric] for r in by_key[variant]["runs"] if r["state"] == "complete"}
            theirs = {r["seed"]: r["test"][metric] for r in by_key[baseline]["runs"] if r["state"] == "complete"}
            cmp = paired_comparison(mine, theirs)
            rows.append({"variant": variant, "baseline": baseline, "split": "test", "metric": metric, "n": cmp.n,
                         "seeds": cmp.seeds, "differences": cmp.differences, "mean": cmp.mean,
                         "ci95": list(cmp.ci95), "p_value": cmp.p_value, "test": cmp.test})
    return rows


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def _pct(metric: str) -> bool:
    return metric.startswith(("acc", "f1"))


def _fmt(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{100 * value:.1f}" if _pct(metric) else f"{value:.3f}"


def markdown(doc: dict[str, Any]) -> str:
    results, ridge = doc["results"], doc["ridge"]
    lines = ["Utterance-level features, speaker-independent split of Poria et al., not comparable with the "
             "standard MOSI tables. Test split (752 utterances, 31 videos); mean ± sample std over the n "
             f"complete seeds of {', '.join(map(str, doc['seeds']))}; MAE lower is better; Acc/F1 in %.", "",
             "| model | n | " + " | ".join(("MAE", "Corr", "Acc-2 (non0)", "F1 (non0)", "Acc-7")) + " | best epoch | epochs |",
             "|---|---|" + "---|" * (len(METRICS) + 2)]
    for variant in results["variants"]:
        stats = variant["test"]
        cells = [f"{_fmt(m, stats[m]['mean'])} ± {_fmt(m, stats[m]['std'])}" if m in stats else "—" for m in METRICS]
        runs = [r for r in variant["runs"] if r["state"] == "complete"]
        epochs = "/".join(str(r["best_epoch"]) for r in runs), "/".join(str(r["epochs_run"]) for r in runs)
        lines.append(f"| {variant['key']} | {len(runs)} | " + " | ".join(cells) + f" | {epochs[0]} | {epochs[1]} |")
    for modalities in ("tav", "t"):
        for kind, label in (("given", "issue's alpha"), ("selected", "alpha on valid")):
            entry = ridge[modalities].get(kind)
            if entry:
                cells = [_fmt(m, entry["test"].get(m)) for m in METRICS]
                lines.append(f"| ridge {modalities} ({label} {entry['alpha']:g}) | — | " + " | ".join(cells) + " | | |")
    lines += ["", "Per seed (test MAE / Acc-2 non0 %):", "", "| model | " + " | ".join(map(str, doc["seeds"])) + " |",
              "|---|" + "---|" * len(doc["seeds"])]
    for variant in results["variants"]:
        by_seed = {r["seed"]: r for r in variant["runs"] if r["state"] == "complete"}
        cells = [f"{by_seed[s]['test']['mae']:.3f} / {100 * by_seed[s]['test']['acc2_non0']:.1f}" if s in by_seed else "—"
                 for s in doc["seeds"]]
        lines.append(f"| {variant['key']} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences (variant − baseline, test; 95 % CI from t, paired t-test p):", "",
              "| variant | baseline | metric | mean diff | 95 % CI | p |", "|---|---|---|---|---|---|"]
    for p in doc["paired"]:
        if p["metric"] not in ("mae", "acc2_non0", "corr"):
            continue
        scale = 100 if _pct(p["metric"]) else 1
        ci = p["ci95"]
        ci_text = f"[{scale * ci[0]:+.3f}, {scale * ci[1]:+.3f}]" if all(
            c is not None and math.isfinite(c) for c in ci) else "—"
        p_text = f"{p['p_value']:.3f}" if p["p_value"] is not None and math.isfinite(p["p_value"]) else "—"
        mean = f"{scale * p['mean']:+.3f}" if p["mean"] is not None and math.isfinite(p["mean"]) else "—"
        lines.append(f"| {p['variant']} | {p['baseline']} | {p['metric']} | {mean} (n={p['n']}) | {ci_text} | {p_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the mosi-bclstm folder")
    parser.add_argument("--labels", type=Path, default=LABELS, help="mosi_text_labels.csv (continuous labels)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: checks the plumbing only")
    parser.add_argument("--ridge-only", action="store_true", help="prepare the data and compute the ridge only")
    parser.add_argument("--summarize", action="store_true",
                        help="train nothing: the tables from the runs finished so far (the sweep continues when "
                             "the command is run again without it; join more workers with the line it prints)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("misalatch.training").setLevel(logging.WARNING)  # one line per run, not per epoch
    seeds = args.seeds[:1] if args.quick else args.seeds
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    table = build_table(args.source, args.out / "table.csv")
    dataset = prepare(args.out / "table.csv", args.labels, args.out / "prepared")
    labels = {s.id: s.label for split in dataset.splits.values() for s in split}
    mismatched = [k for k, b in table["binary"].items() if int(labels[k] >= 0) != b]
    if mismatched:
        raise SystemExit(f"binary labels disagree with label >= 0 for {len(mismatched)} utterances: {mismatched[:3]}")
    ridge = ridge_reference(dataset)
    (args.out / "ridge.json").write_text(json.dumps(ridge, indent=2))
    log.info("ridge t+a+v (issue's alpha): %s", {k: round(v, 3) for k, v in ridge["tav"]["given"]["test"].items()})
    doc: dict[str, Any] = {"format": FORMAT, "version": 1, "seeds": seeds, "split_sizes": dataset.split_sizes(),
                           "held_out_speakers": dataset.meta["held_out_speakers"], "valid_fraction": VALID_FRACTION,
                           "valid_seed": VALID_SEED, "ridge": ridge, "given_ridge": GIVEN_RIDGE,
                           "variants": variants(args.quick)}
    if not args.ridge_only:
        results = run_sweep(args.out / "prepared", args.out / "sweep", seeds, args.quick, args.summarize)
        doc.update(results=results, paired=paired_tables(results), wall_s=time.time() - started)
        (args.out / "benchmark.md").write_text(markdown(doc))
        print((args.out / "benchmark.md").read_text())
    (args.out / "benchmark.json").write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
