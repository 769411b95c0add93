"""Wakes waiting requests when the stream advances, with the position only.

The notifier never carries payloads: a woken request reads what it needs from the
database up to the position it was given, so a sync token can never run ahead of
what is committed. Waiting costs one trio.Event shared by every waiter, whatever
their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class NotifierStatistics:
    position: int
    waiters: int
    notifications: int


class Notifier:
    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._changed = trio.Event()
        self._waiters = 0
        self._notifications = 0

    @property
    def position(self) -> int:
        return self._position

    def notify(self, position: int) -> None:
        """The stream is committed up to ``position``; wake everyone waiting below it."""
        if position <= self._position:
            return
        self._position = position
        self._notifications += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_past(self, position: int, timeout_s: float = math.inf) -> int:
        """Wait until the stream is past ``position`` or the timeout passes; return the
        current position either way."""
        if self._position > position:
            await trio.lowlevel.checkpoint()  # an async function always checkpoints
            return self._position
        self._waiters += 1
        try:
            with trio.move_on_after(timeout_s):
                while self._position <= position:
                    await self._changed.wait()
        finally:
            self._waiters -= 1
        return self._position

    def statistics(self) -> NotifierStatistics:
        return NotifierStatistics(self._position, self._waiters, self._notifications)
