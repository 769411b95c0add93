"""Exponential backoff for retrying a remote peer (an application service, a push
gateway, a federation destination): each failure multiplies the delay, from
``minimum`` up to ``maximum``, optionally with a random jitter factor."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    minimum: float
    maximum: float
    multiplier: float = 2.0
    jitter: tuple[float, float] = (1.0, 1.0)
    """Each growth is also multiplied by a uniform random factor in this range."""

    def next(
        self, previous: float, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """The delay after one more failure, given the delay before it (0: none yet)."""
        if previous <= 0:
            return self.minimum
        factor = self.multiplier
        if self.jitter != (1.0, 1.0):
            factor *= uniform(*self.jitter)
        return min(self.maximum, max(self.minimum, previous * factor))
