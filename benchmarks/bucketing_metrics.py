"""Does length-bucketed batching hurt the metrics? Random vs bucketed batches over several seeds.

Trains MISA on the built-in synthetic data (its default sizes, 600 / 120 / 200) once per seed and
batching mode, with everything else equal, and prints the test metrics of both side by side
(mean ± std over the seeds) plus the wall time of each run. The synthetic data is SYNTHETIC: these
numbers only compare the two batching modes with each other.

    PYTHONPATH=. python benchmarks/bucketing_metrics.py                        # 3 seeds, 20 epochs
    PYTHONPATH=. python benchmarks/bucketing_metrics.py --seeds 1 2 3 --max-epochs 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from misalatch.training.config import TrainConfig
from misalatch.training.runs import train

KEYS = ("mae", "corr", "acc2_non0", "f1_non0", "acc7")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 2222, 3333])
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--text-encoder", default="learned")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in ("random", "bucketed"):  # interleaved, so machine load hits both alike
                cfg = TrainConfig(text_encoder=args.text_encoder, max_epochs=args.max_epochs, seed=seed,
                                  batching=mode, device="cpu", out=str(Path(tmp) / f"{mode}-{seed}"))
                t0 = time.perf_counter()
                metrics = train(cfg).test_metrics
                row = results.setdefault(mode, {k: [] for k in (*KEYS, "seconds")})
                for k in KEYS:
                    row[k].append(float(metrics[k]))
                row["seconds"].append(time.perf_counter() - t0)
                print(f"seed {seed} {mode:8s} " + " ".join(f"{k} {metrics[k]:.4f}" for k in KEYS), flush=True)
    print("\nmetric      random              bucketed   (test, SYNTHETIC data, "
          f"{len(args.seeds)} seeds, {args.max_epochs} epochs max)")
    for k in (*KEYS, "seconds"):
        cells = []
        for mode in ("random", "bucketed"):
            v = results[mode][k]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):8.4f} ± {sd:.4f}")
        print(f"{k:10s} {cells[0]:>20s} {cells[1]:>20s}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
