"""Throughput and memory of ``misalatch extract`` / ``predict --media`` beside the libraries alone.

Printed, each as clip seconds per wall second ("x real time"):

* corpus throughput: N copies of the real MOSI clip (7.5 s each; distinct bytes so the cache cannot
  help) extracted through the corpus layer (``extract_rows``: one job per file) for acoustic, visual and
  both, at 1 and 2 worker processes (worker start-up included);
* a single 60-second clip (the real clip's packets repeated, no re-encoding) with default settings;
* the floor, the same libraries called directly on the same 60-second clip with nothing else: PyAV
  decoding every video and audio frame, MediaPipe's face mesh alone on the pictures the recipe samples
  (decoded beforehand), and afx-audio's eGeMAPS low-level descriptors alone on the decoded waveform;
* peak RSS (Linux ``VmHWM``) of extracting a 10-minute clip in a fresh process;
* latency of ``misalatch predict RUN --media CLIP.mp4 --text ...`` on a 10-second clip, a fresh process
  (interpreter start, model load and extraction included), with a tiny run trained here.

    python benchmarks/extraction.py                 # everything (a few minutes on 2 cores)
    python benchmarks/extraction.py --copies 4 --skip-long

Targets (2 cores, defaults): corpus >= 10x real time with 2 workers, a single 60-s clip >= 5x,
RSS <= 1 GB for a 10-minute clip, predict on a 10-s clip <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / ".." / "shared" / "data" / "mosi" / "Oz06ZWiO20M_6.mp4"


def looped_clip(src: Path, dst: Path, seconds: float) -> Path:
    """The clip's packets repeated (timestamps shifted) until ``seconds``: a long real clip without
    re-encoding (every copy starts on a key frame)."""
    import av

    with av.open(str(src)) as probe:
        length = float(probe.duration) / av.time_base
    loops = max(1, int(round(seconds / length)))
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("audio", "video")}
        for k in range(loops):
            inp.seek(0)
            for packet in inp.demux(*[s for s in inp.streams if s.index in streams]):
                if packet.dts is None:
                    continue
                shift = int(round(k * length / packet.time_base))
                packet.pts = None if packet.pts is None else packet.pts + shift
                packet.dts += shift
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def corpus_rows(folder: Path, copies: int):
    from misalatch.media.corpus import ClipRow

    rows = []
    data = CLIP.read_bytes()
    for i in range(copies):
        path = folder / f"copy{i}.mp4"
        path.write_bytes(data + bytes([i]))  # distinct content; trailing byte ignored by the demuxer
        rows.append(ClipRow(i, None, path.name, str(path), f"c{i}", "x"))
    return rows


def throughput(rows, modalities, workers) -> float:
    from misalatch.media.corpus import ExtractionStats, extract_rows
    from misalatch.media.recipe import default_recipe

    stats = ExtractionStats()
    began = time.perf_counter()
    out = extract_rows(rows, default_recipe(), modalities=modalities, workers=workers, progress=False, stats=stats)
    wall = time.perf_counter() - began
    assert all(o.failure is None for o in out.values()), [o.failure for o in out.values()]
    return stats.media_seconds / wall


def floors(clip: Path) -> dict[str, float]:
    """The libraries alone on ``clip``."""
    import av
    import numpy as np

    from misalatch.media.recipe import default_recipe

    recipe = default_recipe()
    with av.open(str(clip)) as c:
        length = float(c.duration) / av.time_base
    began = time.perf_counter()
    with av.open(str(clip)) as c:
        for _ in c.decode(video=0):
            pass
    with av.open(str(clip)) as c:
        for _ in c.decode(audio=0):
            pass
    result = {"PyAV decode alone (video + audio)": length / (time.perf_counter() - began)}
    # pictures at the recipe's rate, decoded beforehand
    pictures, step, t_next = [], 1.0 / recipe.visual_rate, 0.0
    with av.open(str(clip)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time + 1e-9 >= t_next:
                pictures.append(frame.to_ndarray(format="rgb24"))
                t_next += step
    from mediapipe.python.solutions import face_mesh

    with face_mesh.FaceMesh(static_image_mode=False, max_num_faces=2, refine_landmarks=False,
                            min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
        mesh.process(pictures[0])
        began = time.perf_counter()
        for img in pictures:
            mesh.process(img)
    result[f"MediaPipe face mesh alone ({recipe.visual_rate:g} pictures/s)"] = \
        len(pictures) / recipe.visual_rate / (time.perf_counter() - began)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=recipe.sample_rate)
    parts = []
    with av.open(str(clip)) as c:
        for frame in c.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    signal = np.concatenate(parts).astype(np.float64)
    from afx_audio.extractors import egemaps

    began = time.perf_counter()
    egemaps.extract_egemaps_lld(signal, recipe.sample_rate)
    result["afx-audio eGeMAPS LLDs alone"] = len(signal) / recipe.sample_rate / (time.perf_counter() - began)
    return result


_RSS_CHILD = """
import json, sys, time
from misalatch.media import extract_clip
t = time.perf_counter()
c = extract_clip(sys.argv[1])
wall = time.perf_counter() - t
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"peak_kb": int(hwm), "seconds": c.duration, "wall": wall}))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def peak_rss(clip: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(clip)], capture_output=True, text=True,
                         env=child_env(), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def predict_latency(folder: Path) -> float:
    """A tiny run trained on a 6-segment corpus cut from the real clip, then predict --media on a 10-s clip
    in a fresh process."""
    import csv

    from misalatch.cli import main

    rows = [["clip", "text", "label", "segment_id", "start", "end", "split"]]
    splits = ["train", "train", "train", "valid", "test", "test"]
    for i in range(6):
        rows.append(["interview.mp4", f"words {i}", (i - 2.5) / 1.5, f"s{i}", i * 1.2, (i + 1) * 1.2, splits[i]])
    media = folder / "media"
    media.mkdir(parents=True)
    (media / "interview.mp4").write_bytes(CLIP.read_bytes())
    with open(folder / "t.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert main(["-q", "extract", "--media", str(media), "--transcripts", str(folder / "t.csv"), "--out",
                 str(folder / "prepared"), "--workers", "1"]) == 0
    assert main(["-q", "train", "--data", str(folder / "prepared"), "--text-encoder", "learned", "--hidden-size",
                 "16", "--batch-size", "4", "--max-epochs", "1", "--out", str(folder / "run")]) == 0
    ten = looped_clip(CLIP, folder / "ten.mp4", 10.0)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "misalatch", "-q", "predict", str(folder / "run"), "--media", str(ten),
                    "--text", "a ten second clip", "--out", str(folder / "p.csv")], check=True, env=child_env())
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=8, help="clips in the corpus (7.5 s each)")
    parser.add_argument("--skip-long", action="store_true", help="skip the 10-minute RSS run")
    parser.add_argument("--predict-only", action="store_true", help="only the predict --media latency")
    args = parser.parse_args()
    if not CLIP.is_file():
        print(f"needs the real clip {CLIP}", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="misalatch-bench-") as tmp:
        folder = Path(tmp)
        if args.predict_only:
            print(f"predict --media on a 10-s clip (fresh process, model load included): "
                  f"{predict_latency(folder / 'predict'):.2f} s")
            return 0
        rows = corpus_rows(folder, args.copies)
        print(f"\ncorpus: {args.copies} clips x 7.5 s = {7.5 * args.copies:g} s (x real time, worker start included)")
        for name, mods in (("audio", ("acoustic",)), ("video", ("visual",)), ("both", ("acoustic", "visual"))):
            for workers in (1, 2):
                print(f"  {name:5s} workers {workers}: {throughput(rows, mods, workers):6.1f}x", flush=True)
        sixty = looped_clip(CLIP, folder / "sixty.mp4", 60.0)
        from misalatch.media.corpus import ClipRow

        single = [ClipRow(0, None, "sixty.mp4", str(sixty), "sixty", "x")]
        print(f"\nsingle 60-s clip, both modalities, 1 process: {throughput(single, ('acoustic', 'visual'), 1):.1f}x")
        print("floor (the libraries alone on the same 60-s clip):")
        for name, value in floors(sixty).items():
            print(f"  {name}: {value:.1f}x")
        if not args.skip_long:
            long = looped_clip(CLIP, folder / "ten-minutes.mp4", 600.0)
            rss = peak_rss(long)
            print(f"\n10-minute clip ({rss['seconds']:.0f} s), both modalities, fresh process: peak RSS "
                  f"{rss['peak_kb'] / 1024:.0f} MB, {rss['seconds'] / rss['wall']:.1f}x real time")
        latency = predict_latency(folder / "predict")
        print(f"\npredict --media on a 10-s clip (fresh process, model load included): {latency:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
