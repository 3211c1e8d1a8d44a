"""Patience / trials / learning-rate decay exactly as MISA.md §11 specifies."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    improved: bool  # store the current model and optimiser as the best
    restore: bool  # reload the best model and optimiser, multiply the lr by the decay
    stop: bool  # training ends after this epoch


class EarlyStopping:
    """After each epoch: ``dev_loss <= best`` improves (ties count) and resets the patience.

    Otherwise the patience counter drops; after ``patience + 1`` consecutive non-improving epochs
    the best state is restored with a decayed learning rate, and after ``trials`` such restores
    training stops. ``trials = 1`` is the original's behaviour (stop after ``patience + 1`` bad
    epochs, best weights restored). During the first ``warmup`` epochs a non-improving epoch does
    not count against the patience (the best state is still tracked): feedback masks need a while
    before they gate anything, and judging them earlier stops seeds that have not taken off.
    """

    def __init__(self, patience: int, trials: int, warmup: int = 0) -> None:
        self.patience = patience
        self.warmup = warmup
        self.epoch = 0
        self.best = math.inf
        self.left = patience
        self.trials_left = trials

    def state(self) -> dict[str, float | int]:
        """The counters, for a resumable checkpoint (``epoch`` places a resumed run within the warm-up)."""
        return {"best": self.best, "left": self.left, "trials_left": self.trials_left, "epoch": self.epoch}

    def load_state(self, state: dict[str, float | int], epoch: int | None = None) -> None:
        """``epoch`` (the resumed epoch) stands in for a state saved before the counter was recorded."""
        self.best, self.left, self.trials_left = float(state["best"]), int(state["left"]), int(state["trials_left"])
        self.epoch = int(state["epoch"]) if "epoch" in state else int(epoch or 0)

    def step(self, dev_loss: float) -> Decision:
        self.epoch += 1
        if dev_loss <= self.best:
            self.best = dev_loss
            self.left = self.patience
            return Decision(improved=True, restore=False, stop=False)
        if self.epoch <= self.warmup:
            return Decision(improved=False, restore=False, stop=False)
        self.left -= 1
        if self.left >= 0:
            return Decision(improved=False, restore=False, stop=False)
        self.trials_left -= 1
        self.left = self.patience
        return Decision(improved=False, restore=True, stop=self.trials_left <= 0)
