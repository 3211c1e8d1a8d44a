"""Where a feedback step's time goes, by part: encoders (both passes), mask generators, head + losses.

    PYTHONPATH=. python benchmarks/feedback_parts.py --limit 640 --batches 6

Word-embedding path (benchmarks/speed.py's MOSI-shaped data), one thread, process CPU time (robust
on a shared machine), training mode. Prints per part the forward CPU seconds over the batches and
the whole step (forward + backward) for ``none`` and ``sequence`` (or ``--variant``): the floor of
the feedback/MISA step ratio with the same math is the forward ratio of these parts (docs/speed.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

from misalatch.data.batching import iterate_batches
from misalatch.models.feedback import time_axes
from misalatch.models.outputs import LowLevel


def _speed_module():
    spec = importlib.util.spec_from_file_location("misalatch_speed_benchmark", Path(__file__).with_name("speed.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parts(model, batches) -> dict[str, float]:
    clock = time.process_time
    out = {"encoders": 0.0, "mask generators": 0.0, "head + losses": 0.0, "step": 0.0}
    for batch in batches:
        start = clock()
        inputs = batch.inputs
        low = model.low_level(inputs)
        t = clock()
        if model.feedback is None:
            x = model.encode(low, inputs).x
            out["encoders"] += clock() - t
        else:
            first = model.first_pass(low, inputs)
            out["encoders"] += clock() - t
            t = clock()
            masks = model.feedback(first, time_axes(model.config, low, inputs))
            out["mask generators"] += clock() - t
            t = clock()
            masked = LowLevel(text=low.text * masks.text, visual=low.visual * masks.visual,
                              acoustic=low.acoustic * masks.acoustic)
            x = model.encode(masked, inputs).x
            out["encoders"] += clock() - t
        t = clock()
        losses = model.losses(model.head(x, None), batch.labels)
        out["head + losses"] += clock() - t
        losses.total.backward()
        model.zero_grad(set_to_none=True)
        out["step"] += clock() - start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=640, help="training segments of the MOSI-shaped data")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--variant", default="sequence")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    speed = _speed_module()
    path = speed.build_path("word", speed.parse(["--paths", "word", "--limit", str(args.limit), "--threads", "1"]))
    batches = list(iterate_batches(path.data.splits["train"], path.spec, 64, shuffle=True,
                                   generator=torch.Generator().manual_seed(1), max_batches=args.batches))
    rows = {}
    for variant in ("none", args.variant):
        model = path.make_model(variant)
        model.train()
        rows[variant] = parts(model, batches)
    print(f"| part (CPU s over {len(batches)} batches) | none | {args.variant} |")
    print("| --- | --- | --- |")
    for key in rows["none"]:
        print(f"| {key} | {rows['none'][key]:.2f} | {rows[args.variant][key]:.2f} |")
    forward = {v: r["encoders"] + r["mask generators"] + r["head + losses"] for v, r in rows.items()}
    print(f"\nforward ratio {forward[args.variant] / forward['none']:.2f}x, "
          f"step ratio {rows[args.variant]['step'] / rows['none']['step']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
