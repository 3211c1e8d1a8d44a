"""What ``misalatch robustness`` measures: the settings and their defaults.

Kept apart from ``misalatch.experiments.robustness`` (which imports torch) so that the command's
``--help`` and flag parsing stay fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from misalatch.errors import ConfigError

DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))  # 0.0 .. 0.9
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
CONDITIONS: tuple[str, ...] = ("noise", "frames", "drop")
CURVE_CONDITIONS: tuple[str, ...] = ("noise", "frames")
MODALITY_ORDER = "tav"
NAMES = {"t": "text", "a": "acoustic", "v": "visual"}
FIELDS = {"t": "text_vectors", "a": "acoustic", "v": "visual"}  # ModelInputs / Segment attribute
DEFAULT_PLOT_METRICS = {"regression": ("mae", "corr", "acc2_non0"), "classification": ("acc", "f1")}


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RobustnessConfig:
    """What to measure. Levels are fractions of the train-split std (noise) or drop probabilities."""

    noise_levels: tuple[float, ...] = DEFAULT_LEVELS
    frame_rates: tuple[float, ...] = DEFAULT_LEVELS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    split: Literal["valid", "test"] = "test"
    conditions: tuple[str, ...] = CONDITIONS
    batch_size: int | None = None  # default: the run's own
    plot_metrics: tuple[str, ...] | None = None  # default per task; every metric is in the CSVs

    def __post_init__(self) -> None:
        for name, levels, top in (("noise levels", self.noise_levels, math.inf), ("frame rates", self.frame_rates, 1.0)):
            values = tuple(levels)
            if len(values) < 2:
                raise ConfigError(f"{name}: need at least two levels for a curve and its area, got {list(values)}")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= top for v in values):
                raise ConfigError(f"{name}: every level must be a finite number in [0, {top}], got {list(values)}")
            if any(b <= a for a, b in zip(values, values[1:])):
                raise ConfigError(f"{name}: levels must be strictly increasing, got {list(values)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: need one or more distinct seeds, got {list(self.seeds)}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds: must be non-negative integers, got {list(self.seeds)}")
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if not self.conditions or unknown:
            raise ConfigError(f"conditions: use one or more of {', '.join(CONDITIONS)}, got {list(self.conditions)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    def levels(self, condition: str) -> tuple[float, ...]:
        return tuple(float(v) for v in (self.noise_levels if condition == "noise" else self.frame_rates))
