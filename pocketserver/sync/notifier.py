"""Wakes waiting requests when the stream advances, with the position only.

The notifier never carries payloads: a woken request reads what it needs from the
database up to the position it was given, so a sync token can never run ahead of
what is committed. Waiting costs one trio.Event shared by every waiter, whatever
their number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class NotifierStatistics:
    position: int
    waiters: int
    notifications: int


class Notifier:
    """The room event stream's position, and the positions of other named streams
    (account data, receipts, typing...), each advanced by whoever commits to it."""

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._streams: dict[str, int] = {}
        self._changed = trio.Event()
        self._waiters = 0
        self._notifications = 0
        self._closing = False

    @property
    def closing(self) -> bool:
        """True once the server shuts down: waits end at once from then on."""
        return self._closing

    def close(self) -> None:
        """The server is shutting down: wake every waiter now and never wait again,
        so long-polls answer at once instead of holding the shutdown up."""
        self._closing = True
        self._wake()

    @property
    def position(self) -> int:
        return self._position

    def notify(self, position: int) -> None:
        """The event stream is committed up to ``position``; wake everyone waiting below it."""
        if position <= self._position:
            return
        self._position = position
        self._wake()

    def stream_position(self, stream: str) -> int:
        return self._streams.get(stream, 0)

    def notify_stream(self, stream: str, position: int) -> None:
        """Another stream is committed up to ``position``; wake every waiter."""
        if position <= self._streams.get(stream, 0):
            return
        self._streams[stream] = position
        self._wake()

    def _wake(self) -> None:
        self._notifications += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _past(self, events: int, streams: Mapping[str, int]) -> bool:
        return self._position > events or any(
            self._streams.get(name, 0) > pos for name, pos in streams.items()
        )

    async def wait_for_change(
        self, events: int, streams: Mapping[str, int], timeout_s: float = math.inf
    ) -> None:
        """Wait until the event stream is past ``events`` or any named stream is past
        its position in ``streams``, or the timeout passes."""
        if self._past(events, streams) or self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._waiters += 1
        try:
            with trio.move_on_after(timeout_s):
                while not self._past(events, streams) and not self._closing:
                    await self._changed.wait()
        finally:
            self._waiters -= 1

    async def wait_past(self, position: int, timeout_s: float = math.inf) -> int:
        """Wait until the stream is past ``position`` or the timeout passes; return the
        current position either way."""
        if self._position > position or self._closing:
            await trio.lowlevel.checkpoint()  # an async function always checkpoints
            return self._position
        self._waiters += 1
        try:
            with trio.move_on_after(timeout_s):
                while self._position <= position and not self._closing:
                    await self._changed.wait()
        finally:
            self._waiters -= 1
        return self._position

    def statistics(self) -> NotifierStatistics:
        return NotifierStatistics(self._position, self._waiters, self._notifications)
