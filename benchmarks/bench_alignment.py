"""Time and memory of CSD word alignment (``build_csd_dataset``) at fractions of CMU-MOSEI's size.

For every scale, synthetic CSD files in the real layout are written to a temporary folder
(:func:`misalatch.data.synthetic.csd.write_synthetic_csds`; MOSEI: 3,293 videos, 23,259
segments, about 65 hours), then the dataset is built in a **fresh subprocess**, so that each
scale's peak resident memory (Linux ``VmHWM``) is its own. Printed per scale: generation time,
alignment time, peak RSS (and its growth over the interpreter's RSS after imports), the size of
what the returned dataset holds (arrays, word lists, segments), segments per second, and the time
and memory ratios against the first scale next to the size ratio — linear growth shows as time
ratio ≈ size ratio, bounded working memory as peak − output staying nearly flat.

    python benchmarks/bench_alignment.py                    # 5 %, 20 %, 100 % (minutes; ~4 GB disk)
    python benchmarks/bench_alignment.py --scales 0.05,0.2  # quick
    python benchmarks/bench_alignment.py --tracemalloc      # also a traced run: peak of Python/NumPy allocations

The numbers are from synthetic data of the real sizes and layout; real files differ in content and
compression, not in the amount of work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MOSEI_VIDEOS = 3293


def _peak_rss_kb() -> int:
    """This process's peak RSS. Linux ``VmHWM`` is per address space, so unlike ``ru_maxrss`` it does not
    inherit the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(folder: str, trace: bool) -> None:
    """Build the dataset once and print one JSON line with the measurements."""

    from misalatch.data.readers.csd import build_csd_dataset

    base_kb = _peak_rss_kb()
    paths = json.loads(Path(folder, "paths.json").read_text())
    if trace:
        import tracemalloc

        tracemalloc.start()
    t0 = time.perf_counter()
    ds = build_csd_dataset(labels=paths["labels"], words=paths["words"], visual=paths["visual"],
                           acoustic=paths["acoustic"], dataset="mosei", folds=paths["folds"])
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] if trace else None
    peak_kb = _peak_rss_kb()
    segs = [s for split in ds.splits.values() for s in split]
    array_bytes = sum(s.visual.nbytes + s.acoustic.nbytes for s in segs)
    # everything the returned dataset holds: arrays with headers, word lists, distinct word strings, segments
    strings = {id(w): sys.getsizeof(w) for s in segs for w in s.words}
    out_bytes = sum(sys.getsizeof(s.visual) + sys.getsizeof(s.acoustic) + sys.getsizeof(s.words) + sys.getsizeof(s)
                    + sys.getsizeof(vars(s)) for s in segs) + sum(strings.values())
    words = sum(len(s.words) for s in segs)
    print(json.dumps({
        "seconds": seconds, "segments": len(segs), "words": words, "dropped": ds.meta["dropped"],
        "base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024, "output_mb": out_bytes / 2**20,
        "arrays_mb": array_bytes / 2**20,
        "traced_mb": None if traced is None else traced / 2**20,
        "nonfinite": ds.meta["nonfinite"],
    }))


def _generate_child(folder: str, scale: float, level: int, seed: int) -> None:
    """Write the synthetic files and print one JSON line (time, bytes on disk)."""
    from misalatch.data.synthetic.csd import write_synthetic_csds

    n_videos = max(3, round(MOSEI_VIDEOS * scale))
    t0 = time.perf_counter()
    paths = write_synthetic_csds(folder, n_videos=n_videos, seed=seed, compression_level=level)
    seconds = time.perf_counter() - t0
    Path(folder, "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    size = sum(Path(p).stat().st_size for k, p in paths.items() if k != "folds")
    print(json.dumps({"gen_s": seconds, "file_mb": size / 2**20, "videos": n_videos}))


def _run_child(*flags: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *flags], check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="0.05,0.2,1.0", help="fractions of MOSEI's size (default 0.05,0.2,1.0)")
    parser.add_argument("--workdir", default=None, help="where to write the synthetic files (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic files")
    parser.add_argument("--compression-level", type=int, default=1, help="gzip level of the synthetic files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracemalloc", action="store_true", help="also measure traced allocations (slower run)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.tracemalloc)
        return 0
    if args.generate:
        _generate_child(args.generate, float(args.scales), args.compression_level, args.seed)
        return 0

    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="misalatch-bench-"))
    rows = []
    try:
        for scale in scales:
            folder = root / f"scale-{scale:g}"
            shutil.rmtree(folder, ignore_errors=True)
            print(f"[{scale:.0%}] generating synthetic CSDs in {folder} ...", file=sys.stderr, flush=True)
            gen = _run_child("--generate", str(folder), "--scales", repr(scale),
                             "--compression-level", str(args.compression_level), "--seed", str(args.seed))
            print(f"[{scale:.0%}] generated {gen['file_mb']:.0f} MiB in {gen['gen_s']:.0f} s; aligning in a fresh "
                  f"process ...", file=sys.stderr, flush=True)
            m = _run_child("--child", str(folder))
            if args.tracemalloc:
                m["traced_mb"] = _run_child("--child", str(folder), "--tracemalloc")["traced_mb"]
            m.update(scale=scale, **gen)
            rows.append(m)
            print(f"[{scale:.0%}] {m['segments']} segments in {m['seconds']:.1f} s, peak RSS {m['peak_mb']:.0f} MiB",
                  file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    first = rows[0]
    header = ("| scale | videos | segments kept | CSD files (MiB) | generate (s) | align (s) | segments/s | "
              "peak RSS (MiB) | RSS over imports (MiB) | output (MiB) | peak − output (MiB) | "
              + ("traced peak (MiB) | " if args.tracemalloc else "")
              + "size ratio | time ratio | RSS-growth ratio |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for m in rows:
        grow = m["peak_mb"] - m["base_mb"]
        first_grow = first["peak_mb"] - first["base_mb"]
        cells = [
            f"{m['scale']:.0%}", f"{m['videos']}", f"{m['segments']}",
            f"{m['file_mb']:.0f}", f"{m['gen_s']:.0f}", f"{m['seconds']:.1f}", f"{m['segments'] / m['seconds']:.0f}",
            f"{m['peak_mb']:.0f}", f"{grow:.0f}", f"{m['output_mb']:.0f}", f"{m['peak_mb'] - m['output_mb']:.0f}",
        ]
        if args.tracemalloc:
            cells.append(f"{m['traced_mb']:.0f}")
        cells += [f"{m['scale'] / first['scale']:.1f}×", f"{m['seconds'] / first['seconds']:.1f}×",
                  f"{grow / first_grow:.1f}×" if first_grow > 0 else "–"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPU(s); gzip level {args.compression_level}; "
          f"dropped at the largest scale: {rows[-1]['dropped']}; non-finite set to 0: {rows[-1]['nonfinite']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
