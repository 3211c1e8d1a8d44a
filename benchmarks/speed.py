"""Training and evaluation speed of misalatch, side by side with the original way of feeding MISA.

Data: MOSI-shaped. The train/valid/test segments are the real MOSI transcripts of
``../shared/data/mosi/mosi_text_labels.csv`` (1,284 / 229 / 686 segments, their real words and
word counts, their labels); the acoustic (74-d) and visual (47-d; ``--features mosei``: 35-d) word
steps are random numbers, one per word, as in the word-aligned MOSI release.

Text paths: ``word`` (vocabulary ids and a trainable 300-d embedding, like GloVe 840B) and ``bert``
(``--bert-size minilm``: the offline all-MiniLM-L6-v2 weights; ``base``: random bert-base-sized
weights; ``tiny``: random 2-layer weights for ``--quick``). Every feedback variant (``--variants``).

Two modes run the SAME model (same initial weights, same math) and are interleaved repetition by
repetition, so every ratio is measured in one run on the same machine state:

* ``original``: the way the original MISA code feeds it: random batches padded to the batch's longest
  segment, BERT tokenisation inside every batch, per-step ``.item()`` reads, the default Adam, and a
  dev AND a test evaluation after every epoch (file-order batches);
* ``misalatch``: :func:`misalatch.training.loop.fit` for one epoch as ``misalatch train`` runs it
  (text prepared once, length-bucketed batches, losses summed on the device, multi-tensor Adam, the
  dev pass only, length-sorted evaluation batches).

Printed (and written as JSON with ``--json``): median train-step time (fixed batches, so variants
compare the model alone), time of one epoch (1,284 training samples + the evaluation passes of that
mode), evaluation throughput, training throughput, parameter count, peak RSS, and the ratios.

    PYTHONPATH=. python benchmarks/speed.py --threads 2 --repeats 3                 # both paths, all variants
    PYTHONPATH=. python benchmarks/speed.py --paths word --variants none,sequence   # a subset
    PYTHONPATH=. python benchmarks/speed.py --profile --paths word                  # where an epoch's time goes
    PYTHONPATH=. python benchmarks/speed.py --quick                                 # tiny, seconds (the test)

This is a benchmark (numbers with ranges), not a test: the test only checks that it runs.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from misalatch.data.batching import Batch, BatchSpec, collate, iterate_batches
from misalatch.data.canonical import CanonicalDataset, Segment
from misalatch.data.text import build_vocab, tokenize_for_bert
from misalatch.models.config import FEEDBACK_VARIANTS, MisaConfig
from misalatch.models.encoders import bert_config_dict, build_bert
from misalatch.models.losses import compute_losses, task_loss
from misalatch.models.misa import MISA
from misalatch.training.loop import evaluate, fit, make_optimizer

REPO = Path(__file__).resolve().parents[1]
MOSI_CSV = REPO / ".." / "shared" / "data" / "mosi" / "mosi_text_labels.csv"
FEATURES = {"mosi": (47, 74), "mosei": (35, 74)}  # (visual, acoustic) sizes of the MISA releases
BERT_SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}
LR, CLIP = 1e-4, 1.0
log = logging.getLogger("speed")
clock = time.perf_counter  # --clock cpu: process CPU time, steadier on a crowded machine with --threads 1


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def mosi_shaped(features: str, *, limit: int | None = None, max_words: int | None = None, seed: int = 0) -> CanonicalDataset:
    """Real MOSI words, word counts and labels; random A/V word steps."""
    if not MOSI_CSV.is_file():
        raise SystemExit(f"{MOSI_CSV.resolve()}: the MOSI transcript CSV is needed (it gives the real word counts)")
    d_v, d_a = FEATURES[features]
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Segment]] = {"train": [], "valid": [], "test": []}
    with MOSI_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            words = row["text"].split()[:max_words] or ["um"]
            n = len(words)
            splits[row["split"]].append(Segment(
                id=row["segment_id"], label=float(row["label"]), words=words,
                visual=rng.standard_normal((n, d_v), dtype=np.float32),
                acoustic=rng.standard_normal((n, d_a), dtype=np.float32)))
    if limit is not None:
        splits = {k: v[: limit if k == "train" else max(1, limit // 2)] for k, v in splits.items()}
    return CanonicalDataset(name="mosi-shaped", task="regression", splits=splits)


@dataclasses.dataclass
class Path_:
    """One text path ready to benchmark: prepared data, its spec, a model factory, a tokenizer."""

    name: str
    data: CanonicalDataset  # text prepared once (misalatch mode)
    raw: CanonicalDataset  # words only for BERT (the original tokenises per batch)
    spec: BatchSpec
    make_model: Callable[[str], MISA]
    tokenizer: Any = None
    max_wordpieces: int = 128


def build_path(name: str, args: argparse.Namespace) -> Path_:
    raw = mosi_shaped(args.features, limit=args.limit, max_words=args.max_words)
    d_v, d_a = FEATURES[args.features]
    base = dict(visual_size=d_v, acoustic_size=d_a, hidden_size=args.hidden, num_classes=1, bert_freeze="none")
    if name == "word":
        data = build_vocab(raw)  # ids only; the embedding below is random and trainable (GloVe-sized)
        vocab = len(data.vocab)
        dim = args.word_dim
        emb = torch.from_numpy(np.random.default_rng(1).standard_normal((vocab, dim), dtype=np.float32))
        spec = BatchSpec(text_encoder="glove", visual_dim=d_v, acoustic_dim=d_a)

        def make(variant: str) -> MISA:
            torch.manual_seed(0)
            cfg = MisaConfig(text_encoder="glove", text_input_size=dim, vocab_size=vocab, feedback=variant, **base)
            return MISA(cfg, embedding=emb)

        return Path_(name, data, raw, spec, make)
    from misalatch.resources import load_tokenizer, resolve_text_encoder

    minilm = resolve_text_encoder(None).path
    tokenizer = load_tokenizer(minilm)
    if args.bert_size == "minilm":
        bert = build_bert(path=str(minilm))
    else:
        fields = dict(BERT_SIZES[args.bert_size], vocab_size=tokenizer.vocab_size, max_position_embeddings=512)
        torch.manual_seed(0)
        bert = build_bert(fields)
    data = tokenize_for_bert(raw, tokenizer, max_wordpieces=128)
    spec = BatchSpec(text_encoder="bert", visual_dim=d_v, acoustic_dim=d_a)
    bert_cfg = bert_config_dict(bert)

    def make(variant: str) -> MISA:
        torch.manual_seed(0)
        cfg = MisaConfig(text_encoder="bert", text_input_size=bert.config.hidden_size, bert_config=bert_cfg,
                         feedback=variant, **base)
        return MISA(cfg, bert=copy.deepcopy(bert))

    return Path_(name, data, raw, spec, make, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------
# the original way of feeding the model
# ----------------------------------------------------------------------------------------------
def original_batches(path: Path_, split: str, batch_size: int, *, shuffle: bool,
                     generator: torch.Generator | None = None) -> Iterator[Batch]:
    """Random (or file-order) batches; BERT ids made inside every batch, as the original collate did."""
    segs = path.raw.splits[split] if path.tokenizer is not None else path.data.splits[split]
    order = torch.randperm(len(segs), generator=generator).tolist() if shuffle else list(range(len(segs)))
    for start in range(0, len(order), batch_size):
        chunk = [segs[i] for i in order[start : start + batch_size]]
        if path.tokenizer is not None:
            tiny = CanonicalDataset(name="batch", task="regression", splits={"train": chunk})
            chunk = tokenize_for_bert(tiny, path.tokenizer, max_wordpieces=path.max_wordpieces).splits["train"]
        yield collate(chunk, path.spec)


@torch.no_grad()
def original_evaluate(model: MISA, path: Path_, split: str, batch_size: int, device: torch.device) -> float:
    model.eval()
    losses = []
    for batch in original_batches(path, split, batch_size, shuffle=False):
        out = model(batch.inputs.to(device))
        losses.append(float(task_loss(out.prediction, batch.labels.to(device), 1)))  # a host read per batch
    return float(np.mean(losses))


def original_epoch(model: MISA, path: Path_, batch_size: int, device: torch.device, seed: int) -> None:
    """One epoch of the original solver: train, then dev and test evaluation."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=LR)  # the default implementation (a loop over parameters on the CPU)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    sums: dict[str, float] = defaultdict(float)
    for batch in original_batches(path, "train", batch_size, shuffle=True, generator=generator):
        out = model(batch.inputs.to(device), batch.labels.to(device))
        optimizer.zero_grad()
        out.losses.total.backward()
        torch.nn.utils.clip_grad_value_(params, CLIP)
        optimizer.step()
        for key, value in out.losses.as_floats().items():  # host reads every step
            sums[key] += value
    original_evaluate(model, path, "valid", batch_size, device)
    original_evaluate(model, path, "test", batch_size, device)


def misalatch_epoch(model: MISA, path: Path_, batch_size: int, device: torch.device, seed: int) -> None:
    """One epoch as ``misalatch train`` runs it (fit: train, dev pass, best state kept in memory)."""
    fit(model, path.data.splits["train"], path.data.splits["valid"], path.spec, batch_size=batch_size, lr=LR,
        clip_value=CLIP, max_epochs=1, patience=6, trials=1, lr_decay=0.5, dev_loss_reduction="batch_mean",
        generator=torch.Generator().manual_seed(seed), device=device, batching="bucketed")


MODES: dict[str, Callable[..., None]] = {"original": original_epoch, "misalatch": misalatch_epoch}


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fixed_batches(path: Path_, batch_size: int, n: int) -> list[Batch]:
    """The same ``n`` random training batches in every mode and variant (seeded)."""
    gen = torch.Generator().manual_seed(123)
    return list(iterate_batches(path.data.splits["train"], path.spec, batch_size, shuffle=True, generator=gen,
                                max_batches=n))


def step_times(model: MISA, batches: Sequence[Batch], device: torch.device, *, original: bool) -> list[float]:
    """Seconds per train step (forward, losses, backward, clip, Adam) over fixed batches."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=LR) if original else make_optimizer(params, LR)
    model.train()
    times = []
    for i, batch in enumerate(batches):
        t0 = clock()
        out = model(batch.inputs.to(device), batch.labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        out.losses.total.backward()
        torch.nn.utils.clip_grad_value_(params, CLIP)
        optimizer.step()
        if original:
            out.losses.as_floats()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first step allocates optimizer state
            times.append(clock() - t0)
    return times


def eval_throughput(model: MISA, path: Path_, batch_size: int, device: torch.device, *, original: bool) -> float:
    """Test-split samples per second of one evaluation pass."""
    n = len(path.data.splits["test"])
    t0 = clock()
    if original:
        original_evaluate(model, path, "test", batch_size, device)
    else:
        evaluate(model, path.data.splits["test"], path.spec, batch_size=batch_size, device=device)
    return n / (clock() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_path(path: Path_, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    fixed = fixed_batches(path, args.batch_size, args.steps + 1)
    for variant in args.variants:
        model = path.make_model(variant).to(device)
        init = copy.deepcopy(model.state_dict())
        params = sum(p.numel() for p in model.parameters())
        rec: dict[str, list[float]] = defaultdict(list)
        for rep in range(args.repeats):  # interleaved: original, misalatch, original, misalatch, ...
            for mode in args.modes:
                model.load_state_dict(init)
                original = mode == "original"
                rec[f"{mode}_step"].append(statistics.median(step_times(model, fixed, device, original=original)))
                model.load_state_dict(init)
                t0 = clock()
                with autocast(args.precision, device):
                    MODES[mode](model, path, args.batch_size, device, seed=rep)
                sync(device)
                rec[f"{mode}_epoch"].append(clock() - t0)
                with autocast(args.precision, device):
                    rec[f"{mode}_eval_sps"].append(eval_throughput(model, path, args.batch_size, device, original=original))
                log.info("%s %s rep %d %s: epoch %.2fs", path.name, variant, rep, mode, rec[f"{mode}_epoch"][-1])
        n_train = len(path.data.splits["train"])
        row: dict[str, Any] = {"path": path.name, "variant": variant, "params": params, "peak_rss_mb": peak_rss_mb(),
                               "train_samples": n_train, "raw": dict(rec)}
        for mode in args.modes:
            row[f"{mode}_step_s"] = statistics.median(rec[f"{mode}_step"])
            row[f"{mode}_epoch_s"] = statistics.median(rec[f"{mode}_epoch"])
            row[f"{mode}_eval_sps"] = statistics.median(rec[f"{mode}_eval_sps"])
        if set(args.modes) == {"original", "misalatch"}:
            ratios = [m / o for m, o in zip(rec["misalatch_epoch"], rec["original_epoch"])]
            row["epoch_ratio"] = statistics.median(ratios)
            row["epoch_ratio_range"] = [min(ratios), max(ratios)]
            steps = [m / o for m, o in zip(rec["misalatch_step"], rec["original_step"])]
            row["step_ratio"] = statistics.median(steps)
            row["step_ratio_range"] = [min(steps), max(steps)]
        rows.append(row)
        del model
    _variant_ratios(rows)
    return rows


def _variant_ratios(rows: list[dict[str, Any]]) -> None:
    """Each variant's step and epoch against the plain MISA (``none``) of the same path and mode."""
    plain = next((r for r in rows if r["variant"] == "none"), None)
    if plain is None:
        return
    for r in rows:
        for mode in ("original", "misalatch"):
            if f"{mode}_step_s" in r:
                r[f"{mode}_step_vs_none"] = r[f"{mode}_step_s"] / plain[f"{mode}_step_s"]
                r[f"{mode}_epoch_vs_none"] = r[f"{mode}_epoch_s"] / plain[f"{mode}_epoch_s"]


@contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


# ----------------------------------------------------------------------------------------------
# profile: where an epoch's time goes, by component
# ----------------------------------------------------------------------------------------------
def profile_epoch(path: Path_, args: argparse.Namespace, device: torch.device, mode: str) -> dict[str, float]:
    """Seconds per component over one training epoch fed the ``mode`` way (its evaluation passes too)."""
    model = path.make_model(args.variants[0]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    original = mode == "original"
    optimizer = torch.optim.Adam(params, lr=LR) if original else make_optimizer(params, LR)
    gen = torch.Generator().manual_seed(0)
    if original:
        batches = original_batches(path, "train", args.batch_size, shuffle=True, generator=gen)
    else:
        batches = iterate_batches(path.data.splits["train"], path.spec, args.batch_size, shuffle=True,
                                  generator=gen, batching="bucketed")
    parts: dict[str, float] = defaultdict(float)
    model.train()
    sums = torch.zeros(5, dtype=torch.float64)
    t_epoch = clock()
    while True:
        t = clock()
        batch = next(batches, None)
        parts["collate (+ tokenisation)"] += clock() - t
        if batch is None:
            break
        t = clock()
        out = model(batch.inputs.to(device))
        sync(device)
        parts["forward"] += clock() - t
        t = clock()
        losses = compute_losses(out, batch.labels.to(device), model.config)
        sync(device)
        parts["losses"] += clock() - t
        t = clock()
        optimizer.zero_grad(set_to_none=True)
        parts["zero_grad"] += clock() - t
        t = clock()
        losses.total.backward()
        sync(device)
        parts["backward"] += clock() - t
        t = clock()
        torch.nn.utils.clip_grad_value_(params, CLIP)
        sync(device)
        parts["clipping"] += clock() - t
        t = clock()
        optimizer.step()
        sync(device)
        parts["optimizer (Adam)"] += clock() - t
        t = clock()
        if original:
            losses.as_floats()
        else:
            sums += losses.stacked()
        parts["loss bookkeeping"] += clock() - t
    t = clock()
    if original:
        original_evaluate(model, path, "valid", args.batch_size, device)
        original_evaluate(model, path, "test", args.batch_size, device)
    else:
        evaluate(model, path.data.splits["valid"], path.spec, batch_size=args.batch_size, device=device)
    parts["evaluation passes"] += clock() - t
    parts["epoch"] = clock() - t_epoch
    # what fit() also does once per improvement: the in-memory best state; and what the run folder writes
    t = clock()
    copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    parts["best state copy (in memory, per improvement)"] = clock() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = clock()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, os.path.join(tmp, "c.pt"))
        parts["checkpoint with Adam state to disk (not in the epoch)"] = clock() - t
        parts["checkpoint MB"] = os.path.getsize(os.path.join(tmp, "c.pt")) / 2**20
    return dict(parts)


def check_adam(path: Path_, device: torch.device, steps: int = 5) -> dict[str, float]:
    """Max abs weight difference after ``steps`` real MISA steps: foreach / fused vs the default Adam."""
    segs = path.data.splits["train"]
    batches = list(iterate_batches(segs, path.spec, 16, max_batches=steps))
    finals = {}
    for kind in ("default", "foreach", "fused"):
        model = path.make_model("none").to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        kw = {"default": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kind]
        opt = torch.optim.Adam(params, lr=LR, **kw)
        model.eval()  # no dropout: the three runs see the same gradients until the updates differ
        for b in batches:
            out = model(b.inputs.to(device), b.labels.to(device))
            opt.zero_grad(set_to_none=True)
            out.losses.total.backward()
            torch.nn.utils.clip_grad_value_(params, CLIP)
            opt.step()
        finals[kind] = [p.detach().clone() for p in params]
    out = {}
    for kind in ("foreach", "fused"):
        out[kind] = max(float((a - b).abs().max()) for a, b in zip(finals["default"], finals[kind]))
    return out


def check_compile(path: Path_, args: argparse.Namespace, device: torch.device, variant: str) -> dict[str, float]:
    """``torch.compile`` against eager on the same fixed batches, interleaved: median step seconds
    of each (after the compiled model's warm-up steps, whose time is reported apart), and the largest
    loss difference over the timed steps (same weights, same batches, eval-mode dropout off)."""
    batches = fixed_batches(path, args.batch_size, args.steps)
    eager = path.make_model(variant).to(device)
    compiled = torch.compile(copy.deepcopy(eager), dynamic=True)  # same weights; no optimizer step changes them
    eager.eval()  # no dropout: both run the same math, so their losses must agree
    compiled.eval()
    t0 = clock()
    for b in batches:  # one pass over the timed batches compiles every shape they need
        compiled(b.inputs.to(device), b.labels.to(device)).losses.total.backward()
        compiled.zero_grad(set_to_none=True)
    sync(device)
    warmup = clock() - t0
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    worst = 0.0
    for _ in range(args.repeats):
        for name, model in (("eager", eager), ("compiled", compiled)):
            losses = []
            for b in batches:
                t = clock()
                out = model(b.inputs.to(device), b.labels.to(device))
                out.losses.total.backward()
                sync(device)
                times[name].append(clock() - t)
                losses.append(float(out.losses.total.detach()))
                model.zero_grad(set_to_none=True)
            if name == "eager":
                reference = losses
            else:
                worst = max(worst, max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(reference, losses)))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {"eager_step_s": e, "compiled_step_s": c, "ratio": c / e, "warmup_s": warmup, "max_rel_loss_diff": worst}


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], modes: Sequence[str]) -> str:
    head = ["path", "variant", "params"]
    for m in modes:
        head += [f"{m} step ms", f"{m} epoch s", f"{m} eval/train"]
    if len(modes) == 2:
        head += ["epoch ratio (range)", "step ratio", "step vs none"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [r["path"], r["variant"], f"{r['params'] / 1e6:.2f}M"]
        for m in modes:
            train_sps = r["train_samples"] / r[f"{m}_epoch_s"]
            cells += [f"{1e3 * r[f'{m}_step_s']:.0f}", f"{r[f'{m}_epoch_s']:.2f}", f"{r[f'{m}_eval_sps'] / train_sps:.1f}x"]
        if len(modes) == 2:
            lo, hi = r["epoch_ratio_range"]
            cells += [f"{r['epoch_ratio']:.2f} ({lo:.2f}-{hi:.2f})", f"{r['step_ratio']:.2f}",
                      f"{r.get('misalatch_step_vs_none', float('nan')):.2f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paths", default="word,bert", help="text paths: word, bert (comma-separated)")
    p.add_argument("--bert-size", default="minilm", choices=["minilm", "base", "tiny"])
    p.add_argument("--variants", default=None, help=f"default: all ({','.join(FEEDBACK_VARIANTS)}); --quick: none,sequence")
    p.add_argument("--modes", default="original,misalatch")
    p.add_argument("--features", default="mosi", choices=sorted(FEATURES))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--word-dim", type=int, default=300, help="word-embedding width (GloVe 840B: 300)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast (GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: process CPU time (use with --threads 1 on a machine shared with other jobs)")
    p.add_argument("--steps", type=int, default=8, help="train steps timed for the median step")
    p.add_argument("--limit", type=int, default=None, help="first N train segments (N/2 valid and test)")
    p.add_argument("--max-words", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="time one epoch by component instead")
    p.add_argument("--check-adam", action="store_true", help="foreach / fused Adam against the default")
    p.add_argument("--check-compile", action="store_true",
                   help="torch.compile against eager (forward + backward, fixed batches, first variant)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.limit, args.max_words, args.hidden, args.word_dim, args.bert_size = 32, 10, 8, 16, "tiny"
        args.variants = args.variants or "none,sequence"
        args.repeats, args.steps, args.batch_size = 1, 2, 16
    args.paths = [s for s in args.paths.split(",") if s]
    args.variants = [s for s in (args.variants or ",".join(FEEDBACK_VARIANTS)).split(",") if s]
    args.modes = [s for s in args.modes.split(",") if s]
    for name, values, allowed in (("paths", args.paths, ("word", "bert")), ("variants", args.variants, FEEDBACK_VARIANTS),
                                  ("modes", args.modes, tuple(MODES))):
        bad = set(values) - set(allowed)
        if bad or not values:
            p.error(f"--{name}: {', '.join(sorted(bad)) or 'empty'} (choose from {', '.join(allowed)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("misalatch").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if args.profile:
        report["profile"] = {}
        for name in args.paths:
            path = build_path(name, args)
            for mode in args.modes:
                parts = profile_epoch(path, args, device, mode)
                report["profile"][f"{name}/{mode}"] = parts
                print(f"\n{name} path, {mode} feeding, variant {args.variants[0]}: epoch {parts['epoch']:.2f} s")
                for key, value in parts.items():
                    if key == "checkpoint MB":
                        print(f"  {key:56s} {value:8.1f}")
                    elif key != "epoch":
                        print(f"  {key:56s} {value:8.3f} s  {100 * value / parts['epoch']:5.1f} %")
    elif args.check_adam:
        report["adam"] = {}
        for name in args.paths:
            diffs = check_adam(build_path(name, args), device)
            report["adam"][name] = diffs
            print(f"{name}: max |w - w_default| after 5 steps: foreach {diffs['foreach']:.3g}, fused {diffs['fused']:.3g}")
    elif args.check_compile:
        report["compile"] = {}
        for name in args.paths:
            res = check_compile(build_path(name, args), args, device, args.variants[0])
            report["compile"][name] = res
            print(f"{name} {args.variants[0]}: eager step {1e3 * res['eager_step_s']:.0f} ms, compiled "
                  f"{1e3 * res['compiled_step_s']:.0f} ms (ratio {res['ratio']:.2f}; warm-up {res['warmup_s']:.0f} s); "
                  f"largest relative loss difference {res['max_rel_loss_diff']:.2g}")
    else:
        rows = []
        for name in args.paths:
            rows += bench_path(build_path(name, args), args, device)
        report["rows"] = rows
        print(table(rows, args.modes))
        print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, device {report['device']}, "
              f"{args.repeats} interleaved repeats; peak RSS {peak_rss_mb():.0f} MB")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
