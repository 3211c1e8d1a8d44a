"""The typed run configuration behind ``misalatch train`` and ``misalatch.train``.

One flat, frozen dataclass: the command line is derived from it (tyro), a YAML file fills it, and
the resolved copy is written next to every result. Fields left at ``None`` take the dataset's
default (MISA.md §8, §11) when the run starts.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import yaml

from misalatch.errors import ConfigError
from misalatch.models.config import FEEDBACK_VARIANTS

BATCH_SIZES = {"mosi": 64, "mosei": 16, "ur_funny": 32}
# Feedback masks start near-constant and only later learn which steps to gate; early stopping must
# not judge them before that (docs/experiments.md, "Early stopping for feedback variants").
FEEDBACK_WARMUP_EPOCHS = 10
# The mask generators of MISA's feedback variants learn this many times faster than the rest of the
# model: at the shared rate their masks stay near-constant for many epochs under MISA's full objective
# and some seeds stall or collapse to constant masks (docs/experiments.md, "Take-off under MISA's full
# objective"). --model mmlatch and plain MISA (no generators) are not affected.
FEEDBACK_MASK_LR_FACTOR = 10.0

# tyro turns an exception raised while it builds the dataclass into a usage box and exit status 2;
# command lines are therefore parsed without validation and validated afterwards, so that a bad
# value is a ConfigError on one line with exit status 1 like every other bad input.
_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("misalatch_deferred_validation", default=False)


@contextlib.contextmanager
def deferred_validation() -> Iterator[None]:
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Command-line flags use these names (``--max-epochs``)."""


    model: str = "misa"
    """Registered model: misa (MISA, with --feedback variants) or mmlatch (the original MMLatch model)."""
    preset: Optional[str] = None
    """Named starting values below a --config file and flags: misa or mmlatch (default: the model's own)."""

    data: str = "synthetic"
    """'synthetic' (built-in, labelled synthetic), a text CSV, a prepared folder, or mosi|mosei|ur_funny."""
    data_root: Optional[str] = None
    """Where mosi|mosei|ur_funny live (default: the MISALATCH_DATA environment variable)."""
    modalities: str = "tav"
    """Modalities to use (t = text, a = acoustic, v = visual); others are fed as zeros."""
    synthetic_size: tuple[int, int, int] = (600, 120, 200)
    """Train/valid/test sizes of the synthetic dataset."""

    text_encoder: Optional[str] = None
    """minilm (offline default), a BERT folder or cached hub id, glove, glove:FILE.txt, learned, source (ids and
    matrix shipped with the data), vectors (word vectors in the data)."""
    max_wordpieces: int = 128
    """BERT wordpiece budget including [CLS]/[SEP]; truncated segments are counted and reported."""
    bert_freeze: Optional[str] = None
    """none | all | layers:k (default per dataset: mosi none, mosei layers:8, ur_funny all)."""
    freeze_embeddings: bool = False
    """Freeze the GloVe matrix (the original trained it)."""

    hidden_size: int = 128
    """H, the width of every shared/private code."""
    dropout: float = 0.5
    """Dropout of the fusion MLP and the discriminator."""
    activation: Literal["relu", "leaky_relu", "elu", "tanh"] = "relu"
    """Activation of the projections and the fusion MLP."""
    rnncell: Literal["lstm", "gru"] = "lstm"
    """Cell of the sLSTM blocks (GRU is an option the golden vectors do not cover)."""
    similarity: Literal["cmd", "adversarial"] = "cmd"
    """Similarity loss: central moment discrepancy or a domain discriminator behind gradient reversal."""
    cmd_moments: int = 5
    """K, the number of CMD moments."""
    reverse_grad_weight: float = 1.0
    """Gradient reversal scale (adversarial similarity)."""
    diff_weight: float = 0.3
    """Weight of the difference (orthogonality) loss."""
    sim_weight: float = 1.0
    """Weight of the similarity loss."""
    recon_weight: float = 1.0
    """Weight of the reconstruction loss."""

    feedback: Literal["none", "sequence", "sequence-mlp", "static", "static-projected"] = "none"
    """MMLatch feedback variant; none is the plain MISA reproduction."""
    mask_combine: Literal["mean", "product", "max"] = "mean"
    """How the two source masks of a target are combined."""
    mask_dropout: float = 0.1
    """Dropout on the combined masks, training only."""
    generator_dropout: float = 0.1
    """Dropout on LSTM mask-generator outputs, training only."""
    feedback_detach: bool = False
    """Detach the first pass before the mask generators."""
    mask_generator: Literal["lstm", "linear"] = "lstm"
    """MMLatch model: LSTM generators (learnable_sequence_mask) or per-step Linear (learnable_static_mask)."""
    mask_dropout_at_eval: bool = False
    """MMLatch model: keep mask dropout on in evaluation, as the original code (stochastic predictions)."""
    length_quirk: bool = False
    """MMLatch model: give every sample the batch's maximum length, as the original collator."""
    encoder_dropout: float = 0.2
    """MMLatch model: dropout on the unimodal BiLSTM outputs and self-attention weights."""
    fuser_dropout: float = 0.1
    """MMLatch model: dropout in the cross-attention fuser and the BiLSTM + attention head."""

    loss: Literal["mse", "l1"] = "mse"
    """Task loss for regression (classification always uses cross-entropy)."""
    batch_size: Optional[int] = None
    """Default per dataset: mosi 64, mosei 16, ur_funny 32."""
    lr: float = 1e-4
    """Adam learning rate (every parameter, BERT included)."""
    clip_value: float = 1.0
    """Gradient clipping by value (0 disables)."""
    max_epochs: int = 500
    """Upper bound on epochs."""
    patience: int = 6
    """Non-improving epochs tolerated; patience + 1 in a row trigger a restore."""
    warmup_epochs: Optional[int] = None
    """Epochs before patience starts counting (the best checkpoint is still kept); default 0 without
    feedback, 10 with a feedback variant, whose masks need time to take off."""
    mask_lr_factor: Optional[float] = None
    """Learning-rate multiplier of the feedback mask generators (--model misa with a feedback variant);
    default 10 there (docs/experiments.md), 1 (no effect) for plain MISA and --model mmlatch."""
    aux_warmup_epochs: Optional[int] = None
    """Epochs over which MISA's auxiliary losses (difference, similarity, reconstruction) ramp linearly
    from weight 0 to their set weights; default the feedback warm-up (10) for --model misa with a feedback
    variant (docs/experiments.md), 0 (full weights from the start) for plain MISA and --model mmlatch."""
    trials: int = 1
    """Times the best checkpoint is restored with a decayed learning rate before stopping."""
    lr_decay: float = 0.5
    """Learning-rate factor applied at each restore."""
    scheduler: Literal["none", "plateau"] = "none"
    """Learning-rate schedule: none, or ReduceLROnPlateau (stepped as --plateau-steps says)."""
    plateau_steps: Literal["dev", "train-then-dev"] = "dev"
    """ReduceLROnPlateau steps per epoch: dev (once, on the dev loss) or train-then-dev (the original MMLatch:
    on an eval-mode pass over the training set, then on the dev loss; the mmlatch preset)."""
    plateau_factor: float = 0.5
    """ReduceLROnPlateau: lr factor at each reduction."""
    plateau_patience: int = 2
    """ReduceLROnPlateau: non-improving epochs before a reduction (torch's meaning)."""
    plateau_cooldown: int = 2
    """ReduceLROnPlateau: epochs to wait after a reduction."""
    plateau_min_lr_factor: float = 0.05
    """ReduceLROnPlateau: minimum lr as a fraction of --lr (the MMLatch recipe: lr / 20)."""
    dev_loss_reduction: Literal["batch_mean", "sample_mean"] = "batch_mean"
    """Dev loss for model selection: mean of batch means (original) or over samples."""
    max_batches_per_epoch: Optional[int] = None
    """Cap on training batches per epoch (smoke tests)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast for the forward passes (meant for GPUs); fp32 reproduces the original numerics."""
    batching: Literal["random", "bucketed"] = "random"
    """Training batches: random (the original's shuffled batches) or bucketed (similar lengths together,
    batches shuffled; measured faster, not yet validated on the metrics over seeds: see docs/speed.md)."""
    evaluate_test: bool = True
    """Evaluate the best checkpoint on the test split; off for hyper-parameter search trials."""

    seed: int = 1111
    """Seed for Python, NumPy, torch and the batch shuffling."""
    seeds: Optional[tuple[int, ...]] = None
    """Several seeds: one run each, then mean ± std (overrides --seed)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when available."""
    out: Optional[str] = None
    """Output folder (default runs/<data>-<feedback>)."""
    overwrite: bool = False
    """Replace an existing run folder misalatch wrote (never any other folder; see docs/reliability.md)."""
    keep_resume_state: bool = False
    """Keep the resumable state (optimiser moments, RNG states) after the run finished."""

    def __post_init__(self) -> None:
        if _DEFERRED.get():
            return  # parsing the command line: validated once parsing is done (see deferred_validation)
        from misalatch.models.registry import get_model
        from misalatch.training.presets import PRESETS

        get_model(self.model)  # ConfigError listing the registered models
        if self.preset is not None:
            PRESETS.get(self.preset)
        if not self.modalities or set(self.modalities) - set("tav") or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"modalities={self.modalities!r}: use letters from 'tav' (e.g. t, ta, tav)")
        if "t" not in self.modalities:
            raise ConfigError("modalities must include text ('t'): MISA's text branch cannot be switched off")
        if self.feedback not in FEEDBACK_VARIANTS:
            raise ConfigError(f"feedback={self.feedback!r} is not one of {', '.join(FEEDBACK_VARIANTS)}")
        if self.bert_freeze is not None and not re.match(r"^(none|all|layers:\d+)$", self.bert_freeze):
            raise ConfigError(f"bert_freeze={self.bert_freeze!r}: expected none, all or layers:<k>")
        positive = ("max_wordpieces", "hidden_size", "max_epochs", "trials", "cmd_moments")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wordpieces < 3:
            raise ConfigError("max_wordpieces must leave room for [CLS], one wordpiece and [SEP] (>= 3)")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.mask_lr_factor is not None and not self.mask_lr_factor > 0:
            raise ConfigError(f"mask_lr_factor must be > 0, got {self.mask_lr_factor}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.aux_warmup_epochs is not None and self.aux_warmup_epochs < 0:
            raise ConfigError(f"aux_warmup_epochs must be >= 0, got {self.aux_warmup_epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        for name in ("plateau_factor", "plateau_min_lr_factor"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("plateau_patience", "plateau_cooldown"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dropout", "mask_dropout", "generator_dropout", "encoder_dropout", "fuser_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.clip_value < 0:
            raise ConfigError(f"clip_value must be >= 0, got {self.clip_value}")
        if len(self.synthetic_size) != 3 or min(self.synthetic_size) < 1:
            raise ConfigError(f"synthetic_size needs three positive sizes (train valid test), got {self.synthetic_size}")

    @property
    def resolved_warmup_epochs(self) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return 0 if self.feedback == "none" else FEEDBACK_WARMUP_EPOCHS

    @property
    def resolved_mask_lr_factor(self) -> float:
        """The generators' learning-rate multiplier this run uses (1.0: one rate for every parameter)."""
        if self.mask_lr_factor is not None:
            return self.mask_lr_factor
        return FEEDBACK_MASK_LR_FACTOR if self.model == "misa" and self.feedback != "none" else 1.0

    @property
    def resolved_aux_warmup_epochs(self) -> int:
        """Epochs of the auxiliary-loss ramp this run uses (0: full weights from epoch 1)."""
        if self.aux_warmup_epochs is not None:
            return self.aux_warmup_epochs
        return self.resolved_warmup_epochs if self.model == "misa" and self.feedback != "none" else 0

    @property
    def run_seeds(self) -> tuple[int, ...]:
        return tuple(self.seeds) if self.seeds else (self.seed,)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a dict (YAML), rejecting unknown keys and wrong types with the key's name.

        The values sit on top of a preset: ``preset`` if given, else the recipe of ``model``
        (``misalatch.training.presets``); the resolved config records the preset's name.
        """
        from misalatch.models.registry import get_model
        from misalatch.training.presets import preset_values

        values = {key.replace("-", "_"): value for key, value in values.items()}
        name = values.get("preset") or get_model(str(values.get("model", cls.model))).recipe
        values = {**preset_values(name), **values, "preset": name}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in fields:
                near = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
            clean[name] = _coerce(name, value, getattr(cls, name, None), source)
        try:
            return cls(**clean)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from err
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        """From a YAML file; ``overrides`` (e.g. ``model`` / ``preset`` from the command line) win."""
        from misalatch.io.documents import load_yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        values = load_yaml(path, what="config file") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
        values.pop("resolved", None)  # a resolved config written by a run can be reused as input
        return cls.from_dict({**values, **(overrides or {})}, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _field_types() -> dict[str, Any]:
    import typing

    return typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Check a YAML value against the field's declared type; tuples come as lists.

    Every mismatch is a ConfigError naming the key, what was expected and what was found.
    """
    import typing

    hint = _field_types()[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        raise ConfigError(f"{source}: {name} must not be null")

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {name} must be {expected}, got {value!r:.80} ({type(value).__name__})")

    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad("a list of integers")
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            expected_len = None
        else:
            expected_len = len(args)
        what = "a list of integers" if expected_len is None else f"a list of {expected_len} integers"
        if expected_len is not None and len(items) != expected_len:
            raise bad(what)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise bad(what)
        return tuple(items)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    return value


def dataset_family(dataset_name: str) -> str:
    """mosi | mosei | ur_funny: whose original defaults (batch size, BERT freezing) apply."""
    name = dataset_name.lower()
    if "mosei" in name:
        return "mosei"
    if "funny" in name or "humor" in name:
        return "ur_funny"
    return "mosi"


NOT_A_SETTING = ("out", "overwrite", "seed", "seeds")  # where and which seed: shown apart from the settings


def changed_settings(config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """field -> (value, default) where ``config`` differs from the defaults of its preset: the part of a
    resolved configuration a report shows (where the run went and its seeds are shown elsewhere)."""
    defaults = TrainConfig.from_dict({"model": config.model, "preset": config.preset}).to_dict()
    return {name: (value, defaults[name]) for name, value in config.to_dict().items()
            if name not in NOT_A_SETTING and value != defaults[name]}
