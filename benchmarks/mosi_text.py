"""Real-data benchmark: MISA on CMU-MOSI text only, against a ridge regression on frozen MiniLM.

Trains MISA (``--modalities t``, the offline all-MiniLM-L6-v2 encoder fine-tuned, every other setting
the MOSI default of ``misalatch train``) on ``../shared/data/mosi/mosi_text_labels.csv`` — the real
CMU-MOSI transcripts and labels in the standard split (1,281 / 229 / 685 with text) — once per seed, and
reports the test metrics as mean ± sample std (ddof = 1) next to a baseline computed by the same
script: ridge regression on the frozen encoder's mean-pooled last hidden states (the same wordpieces
MISA sees), with the penalty chosen on the validation split (lowest validation MAE) and then refit on
the train split only.

    python benchmarks/mosi_text.py                          # 5 seeds (1111-1115), up to 5 epochs (~1 h, 2 cores)
    python benchmarks/mosi_text.py --seeds 1111 --max-epochs 2 --out /tmp/mosi-one   # timing probe
    python benchmarks/mosi_text.py --quick --out /tmp/q     # 60 segments, 1 epoch: checks the plumbing

Writes ``benchmark.json`` (every per-seed value, the ridge's alpha path, wall times, the targets) and
``benchmark.md`` (the table) into ``--out``, and one ordinary run folder per seed under ``runs/``.
Run it from the repository root with misalatch importable (``pip install -e .`` or ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO / ".." / "shared" / "data" / "mosi" / "mosi_text_labels.csv"
DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)
DEFAULT_MAX_EPOCHS = 5  # fits the hour on 2 CPU cores; the targets held (docs/results.md)
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 25))
FORMAT = "misalatch-benchmark-mosi-text"
#: What the toolkit must hold over seeds (issue 10); the ridge is computed here, so "better than the
#: ridge" is checked against this run's own ridge numbers.
TARGETS = {"mae": ("<=", 0.83), "corr": (">=", 0.75), "acc2_non0": (">=", 0.82)}
TABLE_KEYS = ("mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7")

log = logging.getLogger("misalatch.benchmarks.mosi_text")


# ----------------------------------------------------------------------------------------------
# ridge regression, closed form
# ----------------------------------------------------------------------------------------------
def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising ``|y - Xw - b|² + alpha |w|²`` (the intercept is not penalised).

    Solved on centred data from the normal equations ``(XᵀX + alpha I) w = Xᵀy`` in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"ridge_fit: X {x.shape} and y {y.shape} do not match")
    if alpha < 0:
        raise ValueError(f"ridge_fit: alpha must be >= 0, got {alpha}")
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc)
    return w, float(y_mean - x_mean @ w)


def ridge_select(train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray],
                 alphas: Sequence[float] = ALPHAS) -> tuple[float, list[dict[str, float]]]:
    """The alpha with the lowest validation MAE (ties: the larger alpha), and every alpha's score."""
    path = []
    for alpha in alphas:
        w, b = ridge_fit(train[0], train[1], alpha)
        path.append({"alpha": float(alpha), "valid_mae": float(np.mean(np.abs(valid[0] @ w + b - valid[1])))})
    best = min(path, key=lambda p: (p["valid_mae"], -p["alpha"]))
    return best["alpha"], path


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def slice_csv(source: Path, target: Path, per_split: dict[str, int]) -> Path:
    """The first ``per_split[s]`` rows of each split of ``source`` (file order), for --quick."""
    with source.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        kept, counts = [], {s: 0 for s in per_split}
        for row in reader:
            split = row.get("split", "")
            if split in counts and counts[split] < per_split[split] and row.get("text", "").strip():
                counts[split] += 1
                kept.append(row)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    return target


def frozen_embeddings(csv_path: Path, max_wordpieces: int, batch_size: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: (mean-pooled last hidden states of the frozen MiniLM (N, 384), labels (N,)).

    The wordpieces are exactly those MISA is trained on (misalatch's own tokenisation of the words).
    """
    import torch

    from misalatch.data.loading import load_dataset
    from misalatch.data.text import tokenize_for_bert
    from misalatch.models.encoders import build_bert
    from misalatch.resources import load_tokenizer, resolve_text_encoder

    encoder = resolve_text_encoder("minilm")
    dataset = tokenize_for_bert(load_dataset(str(csv_path)), load_tokenizer(encoder.path), max_wordpieces=max_wordpieces)
    bert = build_bert(path=str(encoder.path)).eval()
    out = {}
    with torch.no_grad():
        for split, segments in dataset.splits.items():
            pooled = []
            for start in range(0, len(segments), batch_size):
                chunk = segments[start:start + batch_size]
                width = max(len(s.bert_ids) for s in chunk)
                ids = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, s in enumerate(chunk):
                    ids[i, : len(s.bert_ids)] = torch.from_numpy(s.bert_ids)
                    mask[i, : len(s.bert_ids)] = 1
                hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, W, 384)
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled.append(((hidden * weights).sum(1) / weights.sum(1)).numpy().astype(np.float64))
            labels = np.asarray([float(s.label) for s in segments], dtype=np.float64)
            out[split] = (np.concatenate(pooled) if pooled else np.zeros((0, 384)), labels)
    return out


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------
def run_ridge(csv_path: Path, max_wordpieces: int) -> dict[str, Any]:
    from misalatch.evaluation.metrics import regression_metrics

    start, cpu = time.perf_counter(), time.process_time()
    data = frozen_embeddings(csv_path, max_wordpieces)
    alpha, path = ridge_select(data["train"], data["valid"])
    w, b = ridge_fit(data["train"][0], data["train"][1], alpha)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny --quick slice may have an empty Non0 subset
        metrics = {split: regression_metrics(data[split][0] @ w + b, data[split][1]) for split in ("valid", "test")}
    return {"alpha": alpha, "alpha_path": path, "validation": metrics["valid"], "test": metrics["test"],
            "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def run_misa(csv_path: Path, seeds: Sequence[int], max_epochs: int, out: Path, **overrides: Any) -> list[dict[str, Any]]:
    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    runs = []
    for seed in seeds:
        cfg = TrainConfig(data=str(csv_path), modalities="t", text_encoder="minilm", seed=seed, max_epochs=max_epochs,
                          out=str(out / f"seed-{seed}"), **overrides)
        start, cpu = time.perf_counter(), time.process_time()
        result = train(cfg).runs[0]
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        log.info("seed %d: test MAE %.4f, Corr %.4f (best epoch %d) in %.0f s", seed, result.test["mae"],
                 result.test["corr"], result.best_epoch, seconds)
        history = (out / f"seed-{seed}" / "history.csv").read_text().splitlines()
        runs.append({"seed": seed, "best_epoch": result.best_epoch, "epochs_run": max(len(history) - 1, 0),
                     "seconds": seconds, "cpu_seconds": cpu, "validation": result.validation, "test": result.test,
                     "run_dir": str(Path("runs") / f"seed-{seed}")})
    return runs


def summarise(runs: list[dict[str, Any]], ridge: dict[str, Any]) -> dict[str, Any]:
    from misalatch.evaluation.aggregate import aggregate

    test = aggregate([r["test"] for r in runs])
    checks = {}
    for key, (op, bound) in TARGETS.items():
        mean = test[key]["mean"]
        checks[key] = {"target": f"{op} {bound}", "mean": mean,
                       "met": bool(mean <= bound if op == "<=" else mean >= bound)}
    checks["better_than_ridge"] = {"target": "MAE lower and Corr higher than the ridge",
                                   "met": bool(test["mae"]["mean"] < ridge["test"]["mae"]
                                               and test["corr"]["mean"] > ridge["test"]["corr"])}
    return {"test": test, "validation": aggregate([r["validation"] for r in runs]), "checks": checks}


def markdown_table(summary: dict[str, Any], ridge: dict[str, Any], n: int, max_epochs: int) -> str:
    from misalatch.evaluation.report import format_mean_std, format_value, metric_label

    header = "| model | " + " | ".join(metric_label(k) for k in TABLE_KEYS) + " |"
    lines = [header, "|---|" + "---:|" * len(TABLE_KEYS)]
    misa = [format_mean_std(k, summary["test"][k]["mean"], summary["test"][k]["std"], summary["test"][k]["n"])
            for k in TABLE_KEYS]
    lines.append(f"| MISA, text only, MiniLM fine-tuned ({n} seed{'s' if n != 1 else ''}, ≤ {max_epochs} epochs) | "
                 + " | ".join(misa) + " |")
    lines.append(f"| ridge on frozen MiniLM mean-pooled (alpha {ridge['alpha']:.3g}) | "
                 + " | ".join(format_value(k, ridge["test"][k]) for k in TABLE_KEYS) + " |")
    checks = ", ".join(f"{k} {c['target']}: {'met' if c['met'] else 'NOT met'}" for k, c in summary["checks"].items())
    return "\n".join(lines) + f"\n\nCMU-MOSI test split; mean ± sample std (ddof = 1) over seeds. Targets: {checks}.\n"


def _document(args: argparse.Namespace, source: Path, seeds: Sequence[int], max_epochs: int, runs: list[dict[str, Any]],
              summary: dict[str, Any], ridge: dict[str, Any], wall: float) -> dict[str, Any]:
    import torch

    return {
        "format": FORMAT, "version": 1, "csv": str(source), "quick": args.quick, "seeds": list(seeds),
        "max_epochs": max_epochs,
        "config": {"modalities": "t", "text_encoder": "minilm (all-MiniLM-L6-v2, fine-tuned)",
                   "other": "misalatch train defaults for MOSI (lr 1e-4, batch 64, patience 6, bert_freeze none)"},
        "misa": {"runs": runs, **summary}, "ridge": ridge, "wall_seconds": wall,
        "seconds_per_seed": [r["seconds"] for r in runs],
        # CPU time of all threads: on a shared machine wall time says little; on an idle one with
        # T threads, wall time lies between cpu_seconds / T and cpu_seconds
        "cpu_seconds_per_seed": [r["cpu_seconds"] for r in runs],
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="the MOSI text + label CSV (default: %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="comma list (default: %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS, help="default: %(default)s")
    parser.add_argument("--out", default="benchmarks/results/mosi_text", help="a new folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output of this script")
    parser.add_argument("--quick", action="store_true",
                        help="60 segments (30/15/15), 1 epoch, the first seed only unless --seeds is given")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-ridge", action="store_true", help="skip the ridge baseline")
    args = parser.parse_args(argv)

    from misalatch.cli import setup_logging
    from misalatch.errors import MisalatchError
    from misalatch.io.owned import check_target, claim_output

    setup_logging(0)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        print(f"mosi_text: --seeds {args.seeds!r}: expected a comma list of integers", file=sys.stderr)
        return 2
    explicit_seeds = any(a == "--seeds" or a.startswith("--seeds=") for a in (argv if argv is not None else sys.argv[1:]))
    max_epochs = 1 if args.quick else args.max_epochs
    if args.quick and not explicit_seeds:
        seeds = seeds[:1]
    out = Path(args.out)
    source = Path(args.csv)
    try:
        if not source.is_file():
            raise MisalatchError(f"{source}: no such file (the real CMU-MOSI text CSV; see DATA.md §13.1)")
        check_target(out, "benchmark", overwrite=args.overwrite)
        with tempfile.TemporaryDirectory() as tmp, claim_output(out, "benchmark", overwrite=args.overwrite) as output:
            output.commit()  # the run folders are trained in place below it
            csv_path = slice_csv(source, Path(tmp) / "mosi_quick.csv", {"train": 30, "valid": 15, "test": 15}) \
                if args.quick else source
            wall = time.perf_counter()
            ridge = run_ridge(csv_path, 128) if not args.no_ridge else None
            runs = run_misa(csv_path, seeds, max_epochs, output.path / "runs", device=args.device)
            wall = time.perf_counter() - wall
            output.record_tree("runs")
            ridge = ridge or {"alpha": math.nan, "test": {k: math.nan for k in runs[0]["test"]}, "validation": {}}
            summary = summarise(runs, ridge)
            document = _document(args, source, seeds, max_epochs, runs, summary, ridge, wall)
            table = markdown_table(summary, ridge, len(runs), max_epochs)
            output.write_text("benchmark.md", table)
            output.write_json("benchmark.json", document, default=str)
    except MisalatchError as err:
        print(f"mosi_text: error: {err}", file=sys.stderr)
        return 1
    print(table)
    per_seed = ", ".join(f"{s:.0f}" for s in document["seconds_per_seed"])
    cpu_seed = ", ".join(f"{s:.0f}" for s in document["cpu_seconds_per_seed"])
    print(f"wall time {wall:.0f} s (per seed: {per_seed} s wall, {cpu_seed} s CPU; ridge {ridge.get('cpu_seconds', 0):.0f} s "
          f"CPU, {document['machine']['threads']} threads); written: {out / 'benchmark.json'}, {out / 'benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
