"""Typed model configuration (MISA.md §11.1, MMLATCH.md §4.9).

``MisaConfig`` holds every architectural choice; the model is built from it alone and it
travels with the weights (checkpoint sidecar). Sizes that come from the data or the text encoder
(``text_input_size``, ``visual_size``, ``acoustic_size``, ``vocab_size``) are fields too, filled in
by ``MisaConfig.for_data`` or by the checkpoint importer; the config is never mutated.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
from dataclasses import dataclass
from typing import Any, Literal

from misalatch.errors import ConfigError

TextEncoderKind = Literal["bert", "glove", "vectors"]
Similarity = Literal["cmd", "adversarial"]
Activation = Literal["relu", "leaky_relu", "elu", "tanh"]
RnnCell = Literal["lstm", "gru"]
FeedbackName = Literal["none", "sequence", "sequence-mlp", "static", "static-projected"]
MaskCombine = Literal["mean", "product", "max"]
Alignment = Literal["word", "token", "none"]
RegressionLoss = Literal["mse", "l1"]

FEEDBACK_VARIANTS: tuple[str, ...] = ("none", "sequence", "sequence-mlp", "static", "static-projected")

# Per-dataset defaults of the original code (MISA.md §8, §11).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mosi": {"num_classes": 1, "bert_freeze": "none"},
    "mosei": {"num_classes": 1, "bert_freeze": "layers:8"},
    "ur_funny": {"num_classes": 2, "bert_freeze": "all"},
}

_BERT_FREEZE = re.compile(r"^(none|all|layers:\d+)$")

# Upper bounds on sizes, so a forged sidecar (hidden_size 10**8) is refused before any allocation.
# Each is far above every real model: BERT-large 1024, GloVe 840B 2.2 M words, OpenFace 713 features.
SIZE_LIMITS: dict[str, int] = {
    "text_input_size": 8192, "visual_size": 65_536, "acoustic_size": 65_536, "hidden_size": 8192,
    "num_classes": 1000, "cmd_moments": 100, "vocab_size": 10_000_000,
}


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")


def check_probabilities(config: Any, names: tuple[str, ...]) -> None:
    """Each named field of ``config`` is a dropout probability in [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


def check_known_keys(cls: type, values: dict[str, Any], what: str) -> None:
    """Reject a key that is not a field of the dataclass ``cls``, naming the nearest valid one."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown {what} key {key!r}{hint}")


@dataclass(frozen=True)
class MisaConfig:
    """Architecture and loss settings of MISA and its MMLatch feedback variants."""

    # --- text encoder ---
    text_encoder: TextEncoderKind = "bert"
    text_input_size: int = 768  # d_b for BERT (from the encoder's config), d_e for glove/vectors
    vocab_size: int = 0  # GloVe path only: rows of the embedding matrix
    freeze_embeddings: bool = False  # the original trained the GloVe matrix (its freeze was a no-op)
    bert_freeze: str = "none"  # none | all | layers:k (freeze encoder layers 0..k inclusive)
    # BertConfig fields of the encoder (architecture only; weights come from a folder or a checkpoint).
    bert_config: dict[str, Any] | None = None
    # --- acoustic / visual ---
    visual_size: int = 47
    acoustic_size: int = 74
    rnncell: RnnCell = "lstm"
    # --- shared head ---
    hidden_size: int = 128
    num_classes: int = 1  # 1 = regression (MSE); >1 = classification (cross-entropy)
    dropout: float = 0.5  # fusion MLP and discriminator
    activation: Activation = "relu"
    # --- losses ---
    regression_loss: RegressionLoss = "mse"  # task loss for regression (the original: MSE)
    similarity: Similarity = "cmd"
    cmd_moments: int = 5
    reverse_grad_weight: float = 1.0
    diff_weight: float = 0.3
    sim_weight: float = 1.0
    recon_weight: float = 1.0
    # --- MMLatch feedback (MMLATCH.md §4.9) ---
    feedback: FeedbackName = "none"
    mask_combine: MaskCombine = "mean"
    mask_dropout: float = 0.1  # training only
    generator_dropout: float = 0.1  # LSTM generators only, training only
    detach_first_pass: bool = False

    def __post_init__(self) -> None:
        _check_choice("text_encoder", self.text_encoder, ("bert", "glove", "vectors"))
        _check_choice("similarity", self.similarity, ("cmd", "adversarial"))
        _check_choice("regression_loss", self.regression_loss, ("mse", "l1"))
        _check_choice("activation", self.activation, ("relu", "leaky_relu", "elu", "tanh"))
        _check_choice("rnncell", self.rnncell, ("lstm", "gru"))
        _check_choice("feedback", self.feedback, FEEDBACK_VARIANTS)
        _check_choice("mask_combine", self.mask_combine, ("mean", "product", "max"))
        if not _BERT_FREEZE.match(str(self.bert_freeze)):
            raise ConfigError(f"bert_freeze={self.bert_freeze!r}: expected none, all or layers:<k>")
        for name, top in SIZE_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
            low = 0 if name == "vocab_size" else 1
            if not low <= value <= top:
                raise ConfigError(f"{name} must be in {low}..{top}, got {value!r}")
        if self.text_encoder == "glove" and self.vocab_size < 2:
            raise ConfigError("text_encoder=glove needs vocab_size >= 2 (<unk> and <pad>)")
        check_probabilities(self, ("dropout", "mask_dropout", "generator_dropout"))
        for name in ("diff_weight", "sim_weight", "recon_weight", "reverse_grad_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.hidden_size % 2:
            raise ConfigError(f"hidden_size must be even (2 attention heads), got {self.hidden_size}")

    # --- derived facts ---
    @property
    def is_classification(self) -> bool:
        return self.num_classes > 1

    @property
    def has_masks(self) -> bool:
        """Whether forward returns feedback masks (every variant but ``none``)."""
        return self.feedback != "none"

    @property
    def variant(self) -> str:
        """A short label for tables and mask exports: ``misa``, or the feedback variant's name."""
        return "misa" if self.feedback == "none" else self.feedback

    @property
    def text_utterance_size(self) -> int:
        """Width of x_t: d_b for BERT, 4·d_e for the sLSTM text paths."""
        return self.text_input_size if self.text_encoder == "bert" else 4 * self.text_input_size

    # --- construction helpers ---
    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> "MisaConfig":
        """Defaults of the original code for ``mosi``, ``mosei`` or ``ur_funny``, then overrides."""
        if dataset not in DATASET_DEFAULTS:
            raise ConfigError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASET_DEFAULTS)}")
        return cls.from_dict({**DATASET_DEFAULTS[dataset], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MisaConfig":
        """Build from a plain dict, rejecting unknown keys with the nearest valid one."""
        check_known_keys(cls, values, "model config")
        return cls(**values)

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> "MisaConfig":
        """From a run's flat options (see ``ModelSpec.config_from_options``); other options are ignored."""
        from misalatch.models.registry import pick_fields

        return cls.from_dict(pick_fields(cls, values, {"detach_first_pass": "feedback_detach",
                                                       "regression_loss": "loss"}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "MisaConfig":
        return dataclasses.replace(self, **changes)
