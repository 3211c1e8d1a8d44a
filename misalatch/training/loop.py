"""The training loop of MISA.md §11, top to bottom, for every registered model.

Adam over every trainable parameter, gradient clipping by value, model selection on the dev task
loss only (ties count as improvements), patience / trials / lr decay that really take effect, an
optional ReduceLROnPlateau schedule (on the dev loss, or on the training then the dev loss as the
original MMLatch trainer), and one evaluation of the
best checkpoint on the test split at the end (done by the caller). The loop reads only what every
model offers (``misalatch.models.registry``): ``model.config`` and ``output.prediction`` /
``output.losses``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from misalatch.io.progress import progress_enabled  # noqa: F401 - used below, and re-exported

from misalatch.data.batching import Batch, BatchSpec, batch_order, collate, num_batches, segment_lengths
from misalatch.data.canonical import Segment
from misalatch.errors import CheckpointError
from misalatch.evaluation.metrics import compute_metrics
from misalatch.models.losses import task_loss
from misalatch.models.outputs import ModelInputs
from misalatch.training.checkpoint import ResumeState, check_resume_against
from misalatch.training.distributed import SINGLE, Distributed, gather_objects, gather_output, local_batch, wrap
from misalatch.training.early_stopping import EarlyStopping
from misalatch.training.seeding import restore_rng_state, rng_state

log = logging.getLogger(__name__)




@dataclass
class SplitEvaluation:
    loss: float  # task loss, reduced as configured
    metrics: dict[str, float]
    predictions: np.ndarray  # (N,) regression scores or (N, C) logits
    labels: np.ndarray
    ids: list[str]


@dataclass(frozen=True)
class PlateauSchedule:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``, stepped after every epoch.

    ``steps="dev"``: once, on the dev loss. ``steps="train-then-dev"``: the original MMLatch trainer,
    which attaches one evaluation handler (holding the scheduler) to both its train and its
    validation evaluator, so the scheduler is stepped first with the loss of an eval-mode pass over
    the training set, then with the dev loss; both feed the same ``best``, so a dev loss above the
    (usually lower) training loss counts as a bad step.
    """

    factor: float = 0.5
    patience: int = 2
    cooldown: int = 2
    min_lr: float = 0.0
    steps: str = "dev"

    def build(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.factor, patience=self.patience, cooldown=self.cooldown, min_lr=self.min_lr)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    segments: Sequence[Segment],
    spec: BatchSpec,
    *,
    batch_size: int,
    device: torch.device,
    reduction: str = "batch_mean",
    perturb: Callable[[Batch], ModelInputs] | None = None,
    dist_ctx: Distributed = SINGLE,
    shuffle_seed: int | None = None,
) -> SplitEvaluation:
    """Eval-mode pass over a split: task loss (as used for selection) and metrics, in file order.

    The per-sample losses are regrouped into the file-order batches, so ``batch_mean`` is the
    original's mean of batch means. ``perturb(batch) -> inputs`` replaces each batch's (CPU) inputs
    right before the model (the robustness curves use it). Under torchrun (``dist_ctx``) every rank
    predicts its part of the split and all ranks compute the same metrics over the whole split.

    Batches are length-sorted by default (an eval-mode prediction of a model with true lengths does
    not depend on its batch mates). ``shuffle_seed`` instead cuts a permutation drawn from that seed
    into batches, as the original MMLatch's shuffled evaluation loaders: under ``--length-quirk`` a
    prediction depends on its batch mates, and this reproduces the original's batches in kind
    (and, for one seed, exactly from run to run). Results are still returned in file order.
    """
    model.eval()
    if dist_ctx.enabled:  # each rank its contiguous part; the parts, in rank order, are the file order
        part = dist_ctx.shard(len(segments))
        mine = _predict(model, [segments[i] for i in part], spec, batch_size, device, perturb,
                        shuffle_seed) if len(part) else None
        gathered = [p for p in gather_objects(mine, dist_ctx) if p is not None]
        sample_loss, prediction, label = (torch.cat([p[k] for p in gathered]) for k in range(3))
    else:
        sample_loss, prediction, label = _predict(model, segments, spec, batch_size, device, perturb, shuffle_seed)
    prediction, label = prediction.numpy(), label.numpy()
    ids = [s.id for s in segments]
    if reduction == "sample_mean":
        loss = float(sample_loss.mean())
    else:  # the original: mean of per-batch means over file-order batches
        loss = float(torch.stack([chunk.mean() for chunk in sample_loss.split(batch_size)]).mean())
    if model.config.num_classes == 1:
        prediction, label = prediction.reshape(-1), label.reshape(-1)
    task = "classification" if model.config.num_classes > 1 else "regression"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant predictions early in training: corr is NaN, said in the docs
        metrics = compute_metrics(task, prediction, label)
    return SplitEvaluation(loss=loss, metrics=metrics, predictions=prediction, labels=label, ids=ids)


def _predict(model: nn.Module, segments: Sequence[Segment], spec: BatchSpec, batch_size: int, device: torch.device,
             perturb: Callable[[Batch], ModelInputs] | None,
             shuffle_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample task losses (float64), predictions and labels in file order, on the CPU.

    The forward runs over length-sorted batches (an eval-mode sample's output does not depend on
    its batch mates, and sorted batches run far fewer padded steps), or, with ``shuffle_seed``, over
    a permutation drawn from that seed cut into batches; nothing is copied to the host until the
    pass is over."""
    if shuffle_seed is None:
        order = np.argsort(segment_lengths(segments, spec), kind="stable")
    else:
        order = torch.randperm(len(segments), generator=torch.Generator().manual_seed(shuffle_seed)).numpy()
    per_sample, preds, labels = [], [], []
    for start in range(0, len(segments), batch_size):
        batch = collate([segments[i] for i in order[start : start + batch_size]], spec)
        inputs = batch.inputs if perturb is None else perturb(batch)
        out = model(to_device(inputs, device))
        y = batch.labels.to(device)
        per_sample.append(task_loss(out.prediction, y, model.config.num_classes, model.config.regression_loss,
                                    reduction="none").double())
        preds.append(out.prediction.float())
        labels.append(batch.labels)
    inverse = torch.from_numpy(np.argsort(order, kind="stable"))
    return torch.cat(per_sample).cpu()[inverse], torch.cat(preds).cpu()[inverse], torch.cat(labels)[inverse]


def eval_shuffle_seed(seed: int, epoch: int, split: str) -> int:
    """The seed of one shuffled evaluation pass (``--length-quirk``): a fresh draw per run seed, epoch
    and split, so the passes differ as the original's reshuffling loaders do, yet a resumed run or
    ``misalatch evaluate`` (epoch 0: the final evaluation) meets the same batches again."""
    tag = {"train": 1, "valid": 2, "test": 3}.get(split, 4)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, epoch, tag]).generate_state(1)[0])


def to_device(inputs: ModelInputs, device: torch.device) -> ModelInputs:
    """Inputs on ``device``; on a GPU through pinned host memory, so the copies do not block."""
    return inputs.pin_memory().to(device) if device.type == "cuda" else inputs


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast (meant for GPUs; the loss and the optimizer stay fp32), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def param_groups(model: nn.Module, lr: float, lr_factors: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Trainable parameters in optimizer groups: one at ``lr``, plus one per name prefix of
    ``lr_factors`` whose factor is not 1 (its ``lr`` is ``lr * factor``; the factor is kept in the
    group as ``lr_factor`` so that a decay after a restore keeps the ratio). The first group is the
    base rate; with no factor other than 1 there is exactly one group, as the original.
    """
    factors = {prefix: f for prefix, f in (lr_factors or {}).items() if f != 1.0}
    groups: dict[str, list[torch.nn.Parameter]] = {"": [], **{prefix: [] for prefix in factors}}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[next((prefix for prefix in factors if name.startswith(prefix)), "")].append(param)
    out = [{"params": groups[""], "lr": lr, "lr_factor": 1.0}]
    out += [{"params": groups[prefix], "lr": lr * f, "lr_factor": f} for prefix, f in factors.items() if groups[prefix]]
    return out


def make_optimizer(params: list[torch.nn.Parameter] | list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """Adam as the original (defaults), with the multi-tensor implementation.

    ``foreach=True`` runs the same update as the per-parameter loop in a few batched kernels; on the
    CPU it matches the default to the last bit (benchmarks/speed.py --check-adam). ``fused=True``
    is not used on the CPU: it differs from the default by up to ~1e-7 relative per step.
    """
    return torch.optim.Adam(params, lr=lr, foreach=True)


@dataclass
class FitResult:
    best_epoch: int
    best_dev_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None


def aux_scale(epoch: int, warmup_epochs: int) -> float:
    """Weight of the auxiliary losses in ``epoch`` (1-based): 0 at epoch 1, rising linearly to 1 at
    epoch ``warmup_epochs + 1``; 1 throughout without a warm-up."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, (epoch - 1) / warmup_epochs)


def fit(
    model: nn.Module,
    train: Sequence[Segment],
    valid: Sequence[Segment],
    spec: BatchSpec,
    *,
    batch_size: int,
    lr: float,
    clip_value: float,
    max_epochs: int,
    patience: int,
    trials: int,
    lr_decay: float,
    dev_loss_reduction: str,
    generator: torch.Generator,
    device: torch.device,
    max_batches_per_epoch: int | None = None,
    batching: str = "random",
    precision: str = "fp32",
    on_improvement: Callable[[int, SplitEvaluation, torch.optim.Optimizer], None] | None = None,
    schedule: PlateauSchedule | None = None,
    warmup_epochs: int = 0,
    on_epoch_end: Callable[[ResumeState], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[], None] | None = None,
    resume: ResumeState | None = None,
    dist_ctx: Distributed = SINGLE,
    eval_seed: int | None = None,
    lr_factors: dict[str, float] | None = None,
    aux_warmup_epochs: int = 0,
) -> FitResult:
    """Train until early stopping or ``max_epochs``; the model ends holding the best weights.

    ``on_epoch_end`` receives, after every epoch, everything needed to continue exactly from there
    (the caller writes it to disk); ``resume`` is such a state: training continues with the next
    epoch as if it had never stopped (same batches, same dropout masks, same counters, the same
    place in the warm-up). ``on_epoch`` then sees the epoch's history row (e.g. a search pruner);
    it may raise to stop; ``on_step`` is called after every optimiser step (a sweep worker's sign of
    progress). Under torchrun (``dist_ctx``) the model trains in DistributedDataParallel,
    each rank on its shard of every batch (``misalatch.training.distributed``). ``eval_seed``
    (``--length-quirk``) evaluates in shuffled batches drawn afresh each epoch from that seed
    (``eval_shuffle_seed``) instead of length-sorted ones. ``lr_factors``
    (parameter-name prefix → multiplier, e.g. ``{"feedback.": 10}``) trains those parameters at a
    multiple of ``lr`` (``param_groups``). ``aux_warmup_epochs`` ramps the weight of every loss term
    beside the task loss linearly from 0 (epoch 1) to 1 (``aux_scale``); it depends on the epoch
    only, so a resumed run continues the ramp exactly.
    """
    net = wrap(model, dist_ctx, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(param_groups(model, lr, lr_factors), lr)
    scheduler = schedule.build(optimizer) if schedule is not None else None
    stopper = EarlyStopping(patience, trials, warmup_epochs)
    keep_best_optim = trials > 1  # only a later restore reads the best epoch's optimiser state
    result = FitResult(best_epoch=0, best_dev_loss=math.inf)
    steps = num_batches(len(train), batch_size, max_batches_per_epoch)
    first_epoch = 1
    if resume is None:
        best_model, best_optim = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    else:
        assert resume.best_model is not None, "a resume state carries the best weights"
        if resume.scheduler is None and scheduler is not None:
            raise CheckpointError("the resume state has no learning-rate scheduler state, but the run trains "
                                  "with one (--scheduler plateau); it was written by a different configuration")
        check_resume_against(resume, model, optimizer, scheduler)
        best_model = {k: v.to(device) for k, v in resume.best_model.items()}
        model.load_state_dict(resume.model if resume.model is not None else best_model)
        optimizer.load_state_dict(resume.optimizer)
        best_optim = resume.best_optimizer if resume.best_optimizer is not None else copy.deepcopy(optimizer.state_dict())
        stopper.load_state(resume.stopper, epoch=resume.epoch)
        result.best_epoch, result.best_dev_loss = resume.best_epoch, resume.best_dev_loss
        result.history = list(resume.history)
        restore_rng_state(resume.rng, generator)
        if scheduler is not None:
            if resume.scheduler is None:
                raise CheckpointError("the resume state has no learning-rate scheduler state, but the run trains "
                                      "with one (--scheduler plateau); it was written by a different configuration")
            scheduler.load_state_dict(resume.scheduler)
        first_epoch = max_epochs + 1 if resume.stopped else resume.epoch + 1
        log.info("resuming after epoch %d (best epoch %d)%s", resume.epoch, resume.best_epoch,
                 ", training had already stopped" if resume.stopped else "")
    lengths = segment_lengths(train, spec)  # once: the bucketing key
    show = progress_enabled()

    for epoch in range(first_epoch, max_epochs + 1):
        # ---- one epoch of training ----
        model.train()
        scale = aux_scale(epoch, aux_warmup_epochs)
        sums: torch.Tensor | None = None  # the model's loss terms, summed on the device, read once per epoch
        names: tuple[str, ...] = ()
        bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not show, file=sys.stderr)
        order = batch_order(len(train), batch_size, shuffle=True, generator=generator, batching=batching,
                            lengths=lengths)
        for idx in order[:steps]:
            batch, labels, sizes = local_batch(train, idx, spec, dist_ctx)
            with autocast(precision, device):
                out = net(to_device(batch.inputs, device))
                if dist_ctx.enabled:  # the losses of the global batch, on every rank
                    out = gather_output(out, sizes, dist_ctx)
                losses = model.losses(out, labels.to(device, non_blocking=True))
                if scale < 1.0:
                    losses = losses.with_aux_scale(scale)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            if clip_value > 0:
                torch.nn.utils.clip_grad_value_(params, clip_value)
            optimizer.step()
            terms = losses.stacked()  # no host sync per step
            names, sums = losses.names(), terms if sums is None else sums + terms
            bar.update(1)
            if on_step is not None:
                on_step()
            if show:
                bar.set_postfix(loss=f"{losses.total.item():.4f}")
        bar.close()
        train_losses = dict(zip(names, (sums / steps).tolist())) if sums is not None else {}
        if not math.isfinite(train_losses["total"]):
            raise FloatingPointError(f"epoch {epoch}: training loss is {train_losses['total']}")

        # ---- model selection on the dev task loss ----
        lr_now = optimizer.param_groups[0]["lr"]  # the lr this epoch trained with
        eval_kw = dict(batch_size=batch_size, device=device, reduction=dev_loss_reduction, dist_ctx=dist_ctx)
        extra: dict[str, Any] = {}
        if scheduler is not None and schedule is not None and schedule.steps == "train-then-dev":
            # the original's train evaluator: an eval-mode pass over the training set, its loss stepped first
            seen = evaluate(model, train, spec, **eval_kw,
                            shuffle_seed=None if eval_seed is None else eval_shuffle_seed(eval_seed, epoch, "train"))
            scheduler.step(seen.loss)
            extra["train_eval_loss"] = seen.loss
        dev = evaluate(model, valid, spec, **eval_kw,
                       shuffle_seed=None if eval_seed is None else eval_shuffle_seed(eval_seed, epoch, "valid"))
        decision = stopper.step(dev.loss)
        if scheduler is not None:
            scheduler.step(dev.loss)
        if aux_warmup_epochs > 0:
            extra["aux_scale"] = scale
        row = {"epoch": epoch, "lr": lr_now, **{f"train_{k}": v for k, v in train_losses.items()}, **extra,
               "dev_loss": dev.loss, **{f"dev_{k}": v for k, v in dev.metrics.items()},
               "improved": decision.improved}
        result.history.append(row)
        log.info(
            "epoch %d  train %s  | dev loss %.4f %s%s",
            epoch,
            " ".join(f"{k} {v:.4f}" for k, v in train_losses.items()),
            dev.loss,
            " ".join(f"{k} {v:.4f}" for k, v in dev.metrics.items()),
            "  *best*" if decision.improved else "",
        )
        if decision.improved:
            result.best_epoch, result.best_dev_loss = epoch, dev.loss
            best_model = copy.deepcopy(model.state_dict())
            best_optim = copy.deepcopy(optimizer.state_dict())
            if on_improvement is not None:
                on_improvement(epoch, dev, optimizer)
        if decision.restore:
            model.load_state_dict(best_model)
            # a copy: Optimizer.load_state_dict keeps the tensors it is given, and Adam updates them in
            # place, which would corrupt the stored best state before a later restore
            optimizer.load_state_dict(copy.deepcopy(best_optim))
            for group in optimizer.param_groups:
                group["lr"] = lr_now * lr_decay * group.get("lr_factor", 1.0)
            log.info("patience exhausted: best checkpoint (epoch %d) restored%s", result.best_epoch,
                     "" if decision.stop else f", lr -> {lr_now * lr_decay:.3g}")
        if on_epoch_end is not None:
            on_epoch_end(ResumeState(
                epoch=epoch, model=None if decision.improved or decision.restore else model.state_dict(),
                optimizer=optimizer.state_dict(), best_optimizer=best_optim if keep_best_optim else None,
                best_epoch=result.best_epoch, best_dev_loss=result.best_dev_loss, stopper=stopper.state(),
                history=result.history, rng=rng_state(generator), stopped=decision.stop, best_model=best_model,
                scheduler=scheduler.state_dict() if scheduler is not None else None,
            ))
        if on_epoch is not None:
            on_epoch(row)
        if decision.stop:
            break
    model.load_state_dict(best_model)
    result.best_state = best_model
    return result
