"""Models by name (timm-style): a name → the model class, its typed config and its training recipe.

Each model module registers its class with ``register_model``; everything above the models room
(training, evaluation, commands) builds, loads and describes models through ``get_model`` and
the small protocols below, never by importing a model class or branching on a model's name.

    spec = get_model("mmlatch")              # ConfigError listing the valid names if unknown
    config = spec.config_from_dict({...})    # MMLatchConfig, unknown keys rejected
    model = spec.build(config, bert=None, embedding=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn

from misalatch.errors import ConfigError

from misalatch.models.names import Registry  # noqa: F401 - the registries' class, re-exported


# ----------------------------------------------------------------------------------------------
# what every model offers to the code above the models room
# ----------------------------------------------------------------------------------------------
class ModelConfig(Protocol):
    """The facts of a model config that training and evaluation read."""

    text_encoder: str  # bert | glove | vectors
    text_input_size: int
    visual_size: int
    acoustic_size: int
    num_classes: int
    regression_loss: str  # mse | l1

    @property
    def is_classification(self) -> bool: ...

    @property
    def has_masks(self) -> bool: ...  # forward returns feedback masks

    @property
    def variant(self) -> str: ...  # short label for tables and exports

    def to_dict(self) -> dict[str, Any]: ...


class Losses(Protocol):
    total: torch.Tensor

    def as_floats(self) -> dict[str, float]: ...


class ModelOutput(Protocol):
    """What a forward pass returns: ``prediction`` ``(B, 1)`` or logits, masks, losses with labels."""

    prediction: torch.Tensor
    masks: Any  # FeedbackMasks | None
    losses: Losses | None


def pick_fields(config_class: type, values: dict[str, Any], renames: dict[str, str] | None = None) -> dict[str, Any]:
    """The entries of ``values`` that are fields of ``config_class``; ``renames`` maps field → option name.

    Model configs use it in ``from_options`` to read their fields out of a run's flat options.
    """
    import dataclasses

    renames = renames or {}
    out = {}
    for f in dataclasses.fields(config_class):
        key = renames.get(f.name, f.name)
        if key in values:
            out[f.name] = values[key]
    return out


# ----------------------------------------------------------------------------------------------
# the model registry
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class, its config class and the training preset it trains with."""

    name: str
    model_class: type[nn.Module]
    config_class: type
    recipe: str  # name of its training preset (misalatch.training.presets)
    description: str
    signature: str  # a parameter name every instance has and no other registered model has

    def config_from_dict(self, values: dict[str, Any]) -> Any:
        """The config stored with a checkpoint (its own field names)."""
        return self.config_class.from_dict(values)

    def config_from_options(self, values: dict[str, Any]) -> Any:
        """The config for a run: ``values`` are the run's flat options (``TrainConfig`` names) plus
        the sizes taken from the data and the text encoder (``text_encoder``, ``text_input_size``,
        ``vocab_size``, ``bert_config``, ``visual_size``, ``acoustic_size``, ``num_classes``)."""
        return self.config_class.from_options(values)

    def build(self, config: Any, *, bert: nn.Module | None = None, embedding: torch.Tensor | None = None) -> nn.Module:
        if not isinstance(config, self.config_class):
            raise ConfigError(f"model {self.name!r} needs a {self.config_class.__name__}, got {type(config).__name__}")
        return self.model_class(config, bert=bert, embedding=embedding)

    def config_fields(self) -> tuple[str, ...]:
        import dataclasses

        return tuple(f.name for f in dataclasses.fields(self.config_class))


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, *, config: type, recipe: str, description: str,
                   signature: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register_model("misa", config=MisaConfig, recipe="misa", description=..., signature=...)``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS.add(name, ModelSpec(name, cls, config, recipe, description, signature))
        return cls

    return decorator


def _load_builtin_models() -> None:
    """Import the model modules so that their decorators have run."""
    import misalatch.models.misa  # noqa: F401
    import misalatch.models.mmlatch  # noqa: F401


def get_model(name: str) -> ModelSpec:
    _load_builtin_models()
    return MODELS.get(name)


def model_names() -> tuple[str, ...]:
    _load_builtin_models()
    return tuple(sorted(MODELS.names()))


def identify_weights(keys: Iterable[str]) -> str | None:
    """The registered model whose signature parameter is among ``keys`` (None if none or several)."""
    _load_builtin_models()
    present = set(keys)
    found = [name for name in MODELS if MODELS.get(name).signature in present]
    return found[0] if len(found) == 1 else None


def model_name_of(model: nn.Module) -> str:
    """The registered name of a model instance (for records and error messages)."""
    _load_builtin_models()
    for name in MODELS:
        if type(model) is MODELS.get(name).model_class:
            return name
    raise ConfigError(f"{type(model).__name__} is not a registered model; valid: {', '.join(sorted(MODELS.names()))}")
