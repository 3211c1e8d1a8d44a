"""Runs: from a ``TrainConfig`` to trained, evaluated, saved models.

``train(config)`` sets the run up once (``misalatch.training.setup``: data loaded, text tokenised
or mapped to ids exactly once), then for each seed builds a fresh model, fits it on the train split
with model selection on the validation split, evaluates the best checkpoint once on the test split
and writes its run folder (``misalatch.training.run_dir``, which also loads runs back).
``resume_training(run_dir)`` continues a killed run exactly where its last epoch ended.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from misalatch.errors import CheckpointError, ConfigError
from misalatch.evaluation.aggregate import AggregateRow, aggregate, write_aggregate
from misalatch.io.atomic import sha256_file
from misalatch.io.owned import Output, check_target, claim_output, open_output, read_marker, refuse_links
from misalatch.training.checkpoint import (
    REFERENCED,
    ResumeState,
    best_files,
    check_reference,
    commit_checkpoints,
    fill_referenced,
    has_resume_state,
    load_resume_state,
    pretrained_module_prefix,
    read_sidecar,
    remove_resume_state,
    resume_files,
    split_referenced,
)
from misalatch.training.config import TrainConfig
from misalatch.training.distributed import SINGLE, Distributed, distributed_job, is_distributed_launch
from misalatch.training.loop import PlateauSchedule, evaluate, fit
from misalatch.training.run_dir import (
    check_run_links,
    data_facts,
    default_out,
    dev_record,
    final_shuffle_seed,
    save_text_assets,
    write_history,
    write_history_csv,
    write_metrics,
    write_prediction_plots,
    write_run_config,
)
from misalatch.training.seeding import seed_everything
from misalatch.training.setup import RunSetup, build_model, resolve_device, setup_run

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One seed's outcome (also in ``<run_dir>/metrics.json``)."""

    seed: int
    run_dir: Path
    best_epoch: int
    dev_loss: float
    validation: dict[str, float]
    test: dict[str, float]  # empty when the config's evaluate_test is off
    epochs_run: int = 0


@dataclass
class TrainResult:
    """What ``train`` returns: one ``RunResult`` per seed and the aggregate over seeds."""

    out_dir: Path
    runs: list[RunResult]
    aggregate: dict[str, dict[str, Any]] = field(default_factory=dict)
    synthetic: bool = False

    @property
    def test_metrics(self) -> dict[str, float]:
        """Test metrics of the only run, or the mean over seeds."""
        if len(self.runs) == 1:
            return self.runs[0].test
        return {k: v["mean"] for k, v in self.aggregate.items()}


def plateau_schedule(cfg: TrainConfig) -> PlateauSchedule | None:
    """``--scheduler plateau``: ReduceLROnPlateau with min lr = lr × plateau_min_lr_factor."""
    if cfg.scheduler == "none":
        return None
    return PlateauSchedule(factor=cfg.plateau_factor, patience=cfg.plateau_patience, cooldown=cfg.plateau_cooldown,
                           min_lr=cfg.lr * cfg.plateau_min_lr_factor, steps=cfg.plateau_steps)


def eval_seed(cfg: TrainConfig, seed: int) -> int | None:
    """``--length-quirk``: evaluation in shuffled batches seeded from the run's seed (a prediction
    depends on its batch mates there, as in the original); otherwise None (length-sorted batches)."""
    return seed if cfg.length_quirk else None


def train_seed(setup: RunSetup, seed: int, output: Output, sub: str = "", *,
               resume: ResumeState | None = None,
               on_epoch: Callable[[dict[str, Any]], None] | None = None,
               on_step: Callable[[], None] | None = None,
               dist_ctx: Distributed = SINGLE) -> RunResult:
    """Fit one seed into ``output`` (under ``sub``), save its best checkpoint, evaluate it once on test
    (unless the config's ``evaluate_test`` is off: then the test split is never touched).

    After every epoch the best checkpoint (when the epoch improved) and the resumable state are
    committed as one unit; the first such commit swaps a staged run folder into place. With
    ``resume`` the seed continues after the epoch that state was saved at. ``on_epoch`` sees every
    epoch's history row after it was committed (a search trial reports and prunes there); ``on_step``
    is called after every training step.
    """
    cfg = setup.config
    device = dist_ctx.device(resolve_device(cfg.device))
    generator = seed_everything(seed)
    model = build_model(setup).to(device)
    run_dir = output.target / sub.rstrip("/")  # where the run lives for the user (staged until the first commit)
    # the warm-up actually used is recorded, not its ``None`` default
    resolved = cfg.replace(seed=seed, seeds=None, out=str(run_dir), overwrite=False,
                           warmup_epochs=cfg.resolved_warmup_epochs,
                           aux_warmup_epochs=cfg.resolved_aux_warmup_epochs,
                           mask_lr_factor=cfg.resolved_mask_lr_factor)
    if resume is None:
        save_text_assets(setup, output, sub)
        write_run_config(output, sub, setup, resolved)
    sidecar_base = {"model": cfg.model, "config": resolved.to_dict(), "model_config": setup.model_config.to_dict(), "seed": seed,
                    "data": data_facts(setup.dataset), "text_encoder": setup.text.description}
    register = lambda name: output.file(sub + name)  # noqa: E731 - every name is recorded before it is written
    best_sha = [None if resume is None else _sha_or_none(output.path / sub / "best.safetensors")]
    # frozen, unmodified pretrained weights are referenced by encoder name and sha256, not copied
    prefix = pretrained_module_prefix(model) if setup.text.bert is not None else None
    pretrained = {prefix + k: v for k, v in setup.text.bert.state_dict().items()} if prefix else None
    digests: dict[frozenset[str], str] = {}

    def best_set(sidecar: dict[str, Any]) -> dict[str, bytes]:
        state, record = split_referenced(model.state_dict(), pretrained, cfg.text_encoder or "minilm", digests)
        return best_files("best", state, {**sidecar, **({REFERENCED: record} if record else {})})

    if resume is not None and resume.best_model is not None:  # put the referenced tensors back (checked)
        best_path = output.path / sub / "best.json"
        record = check_reference(read_sidecar(output.path / sub, "best").get(REFERENCED), best_path)
        resume.best_model = fill_referenced(resume.best_model, record, model, best_path)
    if resume is not None and resume.model is not None:  # the current weights reference them the same way
        source = Path(resume.source or output.path / sub / "resume.json")
        record = check_reference(resume.extra.get(REFERENCED), source)
        resume.model = fill_referenced(resume.model, record, model, source)

    def save_epoch(state: ResumeState) -> None:
        row = state.history[-1]
        sets = []
        if row["improved"]:
            sidecar = {**sidecar_base, "epoch": state.epoch, "metrics": dev_record(row)}
            best = best_set(sidecar)
            best_sha[0] = hashlib.sha256(best["best.safetensors"]).hexdigest()
            sets.append(best)
        if state.model is not None:  # the current weights, less the frozen pretrained ones (referenced)
            current, record = split_referenced(state.model, pretrained, cfg.text_encoder or "minilm", digests)
            state = dataclasses.replace(state, model=current, extra={**state.extra, REFERENCED: record} if record
                                        else state.extra)
        sets.append(resume_files(state, best_sha256=best_sha[0]))  # one commit: always the same epoch
        commit_checkpoints(output.path / sub, *sets, register=register)
        write_history_csv(output, sub, state.history)
        output.commit()  # the first checkpoint: the staged folder replaces --out (an old run only now)

    log.info("seed %d: training on %s (%d train / %d valid), device %s", seed, setup.dataset.name,
             len(setup.dataset.splits["train"]), len(setup.dataset.splits["valid"]), device)
    fit_result = fit(
        model, setup.dataset.splits["train"], setup.dataset.splits["valid"], setup.spec,
        batch_size=cfg.batch_size, lr=cfg.lr, clip_value=cfg.clip_value, max_epochs=cfg.max_epochs,
        patience=cfg.patience, trials=cfg.trials, lr_decay=cfg.lr_decay, dev_loss_reduction=cfg.dev_loss_reduction,
        generator=generator, device=device, max_batches_per_epoch=cfg.max_batches_per_epoch,
        batching=cfg.batching, precision=cfg.precision,
        schedule=plateau_schedule(cfg), warmup_epochs=cfg.resolved_warmup_epochs, on_epoch_end=save_epoch,
        lr_factors={"feedback.": cfg.resolved_mask_lr_factor}, aux_warmup_epochs=cfg.resolved_aux_warmup_epochs,
        on_epoch=on_epoch, on_step=on_step, resume=resume, dist_ctx=dist_ctx, eval_seed=eval_seed(cfg, seed),
    )
    write_history(output, sub, fit_result.history)
    # the model holds the best weights; evaluate validation (for the record) and test once
    kw = dict(batch_size=cfg.batch_size, device=device, reduction=cfg.dev_loss_reduction, dist_ctx=dist_ctx)
    valid = evaluate(model, setup.dataset.splits["valid"], setup.spec, **kw,
                     shuffle_seed=final_shuffle_seed(cfg, seed, "valid"))
    test = evaluate(model, setup.dataset.splits["test"], setup.spec, **kw,
                    shuffle_seed=final_shuffle_seed(cfg, seed, "test")) if cfg.evaluate_test else None
    test_metrics = test.metrics if test is not None else None
    if test is not None:
        write_prediction_plots(output, sub, test, setup.dataset.task)
    metrics = {"validation": valid.metrics, "test": test_metrics, "dev_loss": valid.loss,
               "test_loss": test.loss if test is not None else None,
               "best_epoch": fit_result.best_epoch, "epochs_run": len(fit_result.history), "seed": seed,
               "threads": torch.get_num_threads(),
               "data": data_facts(setup.dataset), "text_encoder": setup.text.description}
    here = output.path / sub
    commit_checkpoints(here, best_set({**sidecar_base, "epoch": fit_result.best_epoch, "metrics": {
        "validation": valid.metrics, "test": test_metrics, "dev_loss": valid.loss}}), register=register)
    write_metrics(output, sub, metrics)  # last: metrics.json present = this seed is done
    if not cfg.keep_resume_state:
        remove_resume_state(here, output, sub)  # the optimiser state is not needed any more: keep run folders small
    return RunResult(seed, run_dir, fit_result.best_epoch, valid.loss, valid.metrics, test_metrics or {},
                     epochs_run=len(fit_result.history))


def _sha_or_none(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def train(config: TrainConfig | dict[str, Any] | None = None, **overrides: Any) -> TrainResult:
    """Train the configured model (``model``: misa with its feedback variants, or mmlatch); one run per seed.

    ``config`` is a ``TrainConfig``, a dict of its fields, or None for the defaults (the
    built-in synthetic data); keyword ``overrides`` win, over the preset of their ``model`` when no
    config is given (``train(model="mmlatch")`` uses the MMLatch recipe). Returns a ``TrainResult``.
    The output folder is claimed as ``misalatch.io.owned`` describes (docs/reliability.md).
    """
    if config is None:
        config = TrainConfig.from_dict(overrides)
        overrides = {}
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    out = default_out(config)
    check_target(out, "train", overwrite=config.overwrite)  # before the data is read: fail fast
    setup = setup_run(config)
    device = resolve_device(config.device)  # a run that cannot start never touches --out
    with distributed_job(device) as ctx:
        if not ctx.is_main:  # torchrun: only rank 0 writes the run folder; the others keep theirs private
            with tempfile.TemporaryDirectory(prefix=f"misalatch-rank{ctx.rank}-") as private:
                with claim_output(Path(private) / "run", "train") as output:
                    return _train_seeds(setup, output, done={}, dist_ctx=ctx)
        with claim_output(out, "train", overwrite=config.overwrite) as output:
            output.annotate(config=config.replace(out=str(out), overwrite=False).to_dict(),
                            threads=torch.get_num_threads(),  # set by --threads; a process setting, not the config's
                            **({"processes": ctx.world_size} if ctx.enabled else {}))
            return _train_seeds(setup, output, done={}, dist_ctx=ctx)


def _train_seeds(setup: RunSetup, output: Output, done: dict[int, RunResult],
                 resume: dict[int, ResumeState] | None = None, dist_ctx: Distributed = SINGLE) -> TrainResult:
    config = setup.config
    seeds = config.run_seeds
    runs = []
    for seed in seeds:
        if seed in done:
            runs.append(done[seed])
            continue
        sub = "" if len(seeds) == 1 else f"seed-{seed}/"
        runs.append(train_seed(setup, seed, output, sub, resume=(resume or {}).get(seed), dist_ctx=dist_ctx))
    result = TrainResult(out_dir=output.target, runs=runs, synthetic=setup.dataset.synthetic)
    if len(runs) > 1:
        result.aggregate = aggregate([r.test for r in runs])
        group = {"dataset": setup.dataset.name + (" (synthetic)" if setup.dataset.synthetic else ""),
                 "model": config.model, "feedback": config.feedback, "text_encoder": setup.text.description.split(" (")[0], "split": "test"}
        output.file("aggregate.json"), output.file("aggregate.csv")  # recorded before they are written
        write_aggregate([AggregateRow(group=group, seeds=list(seeds), metrics=result.aggregate)], output.path)
    return result


RESUME_FLAGS = ("device", "keep_resume_state")
"""What may differ on ``--resume``: neither changes what is computed (CPU vs GPU aside). The command's
``--threads`` may differ too: it is a setting of the process, not of the run."""


def resume_training(run_dir: str | Path, *, trust_unverified: bool = False, **changes: Any) -> TrainResult:
    """Continue a killed ``train`` run in ``run_dir`` with its own config.

    ``changes`` may only set ``RESUME_FLAGS``. Checkpoints without a manifest are refused unless
    ``trust_unverified`` (``misalatch.training.checkpoint.verify_manifest``); what is resumed is
    checked first (``check_seed_folder``, ``misalatch.training.checkpoint.check_resume_document``).
    Seeds that finished are kept, the interrupted one continues after its last saved epoch exactly
    as it would have, the others are trained.
    """
    bad = sorted(set(changes) - set(RESUME_FLAGS))
    if bad:
        raise ConfigError(f"--resume continues with the run's own config; "
                          f"{', '.join('--' + b.replace('_', '-') for b in bad)} cannot be changed "
                          f"(allowed: {', '.join('--' + f.replace('_', '-') for f in RESUME_FLAGS)})")
    if is_distributed_launch():
        raise ConfigError("--resume runs as one process: start it with misalatch train --resume, not torchrun")
    run_dir = Path(run_dir)
    marker = read_marker(run_dir) if run_dir.is_dir() and not run_dir.is_symlink() else None
    if marker is None:
        hint = " (a run killed before its first epoch ended leaves nothing to resume: start it again)" \
            if not run_dir.exists() else ""
        raise ConfigError(f"--resume {run_dir}: not a misalatch run folder{hint}")
    if marker["kind"] != "train" or not isinstance(marker.get("config"), dict):
        raise ConfigError(f"--resume {run_dir}: not a misalatch train run (kind {marker['kind']!r})")
    if marker.get("complete"):
        raise ConfigError(f"--resume {run_dir}: this run finished; there is nothing to resume")
    config = TrainConfig.from_dict({**marker["config"], **changes, "out": str(run_dir), "overwrite": False},
                                   source=str(run_dir / "run.json"))
    _refuse_run_links(run_dir, config.run_seeds)
    setup = setup_run(config)
    resolve_device(config.device)
    with open_output(run_dir, "train") as output:
        output.annotate(threads=torch.get_num_threads())  # this process's (--threads), as train() records it
        seeds = config.run_seeds
        done: dict[int, RunResult] = {}
        states: dict[int, ResumeState] = {}
        for seed in seeds:
            folder = run_dir if len(seeds) == 1 else run_dir / f"seed-{seed}"
            finished, resumable = (folder / "metrics.json").is_file(), has_resume_state(folder)
            if finished or resumable:  # what was written must still be there, and be of this run
                check_seed_folder(folder, setup, trust_unverified=trust_unverified)
            if finished:
                done[seed] = _finished_seed(folder, seed, config.keep_resume_state, output,
                                            "" if len(seeds) == 1 else f"seed-{seed}/")
            elif resumable:
                states[seed] = load_resume_state(folder, trust_unverified=trust_unverified)
        return _train_seeds(setup, output, done, states)


def _refuse_run_links(run_dir: Path, seeds: tuple[int, ...] | list[int]) -> None:
    """A seed folder or run file that is a symbolic link would make resume read or write outside the
    run folder (docs/security.md): refused before anything is touched."""
    if len(seeds) > 1:
        refuse_links(run_dir, [f"seed-{s}" for s in seeds], error=CheckpointError)
    for seed in seeds:
        check_run_links(run_dir if len(seeds) == 1 else run_dir / f"seed-{seed}")
def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_seed_folder(folder: Path, setup: RunSetup, *, trust_unverified: bool = False) -> None:
    """Before a seed is resumed or counted as finished: its checkpoint verifies, records the model the
    run's own config (run.json) builds, and the files a later ``load_run`` needs are there and are
    those of this data. Otherwise the run would be "resumed" and marked complete, yet unusable."""
    from misalatch.data.text import read_vocab_file
    from misalatch.training.checkpoint import read_sidecar, verify_manifest

    cfg = setup.config
    verify_manifest(folder, "best", trust_unverified=trust_unverified)
    sidecar = read_sidecar(folder, "best")
    recorded = sidecar["config"]
    marker = folder / "run.json" if (folder / "run.json").is_file() else folder.parent / "run.json"
    for name, want in (("model", cfg.model), ("feedback", cfg.feedback)):
        got = sidecar.get("model", recorded.get("model")) if name == "model" else recorded.get(name)
        if got != want:
            raise ConfigError(f"{marker}: --{name} {want!r}, but {folder / 'best.json'} records {name} {got!r:.40}; "
                              "the run folder was edited or mixes two runs, and cannot be resumed")
    want_model = _normalised(setup.model_config.to_dict())
    got_model = _normalised(sidecar["model_config"])
    if got_model != want_model:
        keys = sorted(k for k in set(want_model) | set(got_model) if want_model.get(k) != got_model.get(k))
        raise ConfigError(f"{folder / 'best.json'}: model_config differs from what the run's config and data give now "
                          f"({', '.join(keys[:4])}); the run folder or the data changed, and it cannot be resumed")
    needed = ["config.yaml"]
    if setup.text.tokenizer is not None:
        needed.append("tokenizer")
    if setup.dataset.vocab is not None:
        needed.append("vocab.json")
    for name in needed:
        path = folder / name
        present = path.is_dir() if name == "tokenizer" else path.is_file()
        if path.is_symlink() or not present:
            raise ConfigError(f"{path}: missing; the run cannot be resumed without it (train it again with --overwrite)")
    if setup.dataset.vocab is not None:
        vocab = read_vocab_file(folder / "vocab.json")  # a DataFormatError naming the file
        if vocab != setup.dataset.vocab:
            raise ConfigError(f"{folder / 'vocab.json'}: is not the vocabulary --data {cfg.data} gives now (the data "
                              "or the file changed); the run cannot be resumed")


def _finished_seed(folder: Path, seed: int, keep_resume_state: bool, output: Output, sub: str) -> RunResult:
    try:
        m = json.loads((folder / "metrics.json").read_text())
        result = RunResult(seed, folder, int(m["best_epoch"]), float(m["dev_loss"]), dict(m["validation"]),
                           dict(m["test"] or {}), int(m.get("epochs_run") or 0))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / 'metrics.json'}: unreadable ({err})") from err
    if not keep_resume_state:
        remove_resume_state(folder, output, sub)
    return result
