"""Positions for streams that live in memory only (typing, presence).

Such a stream cannot count from 0 after a restart: a client's token from before
would name a position the new process has not reached, and the client would miss
changes until the count caught up. So positions follow the wall clock: each change
takes ``max(previous + 1, now in ms)``. A restarted server starts above every
position it handed out before (unless the clock went backwards, or more than a
thousand changes a second ran the count ahead of the clock), and a token that
names a position outside what this process knows is answered as a reset: the
stream's whole current state, then incremental changes from the current position.
Tokens therefore never make a long-poll wait for a position that will not come
(the handler waits on the positions it just handed out) and never skip changes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator


def wall_ms() -> int:
    return int(time.time() * 1000)


class StreamClock:
    """The position of an in-memory stream, and which keys (rooms, users) changed when.

    Remembers at most ``max_keys`` keys; forgetting one raises :attr:`floor`, and a
    ``since`` below the floor can no longer be answered incrementally.
    """

    def __init__(self, max_keys: int, now_ms: Callable[[], int] = wall_ms) -> None:
        self._now_ms = now_ms
        self._position = now_ms()
        self.floor = self._position
        """Changes at or below this position are not known individually."""
        self._max_keys = max_keys
        self._changed: OrderedDict[str, int] = OrderedDict()

    @property
    def position(self) -> int:
        return self._position

    def advance(self, keys: list[str] | tuple[str, ...]) -> int:
        """Record that ``keys`` changed, at a new position; return it."""
        self._position = max(self._position + 1, self._now_ms())
        for key in keys:
            self._changed[key] = self._position
            self._changed.move_to_end(key)
        while len(self._changed) > self._max_keys:
            _, forgotten = self._changed.popitem(last=False)
            self.floor = max(self.floor, forgotten)
        return self._position

    def knows(self, since: int) -> bool:
        """Whether changes after ``since`` can be listed (False: answer with everything)."""
        return self.floor <= since <= self._position

    def changed_between(self, since: int, upto: int) -> Iterator[str]:
        """Keys whose last change is in ``(since, upto]``, newest first."""
        for key, pos in reversed(self._changed.items()):
            if pos <= since:
                return
            if pos <= upto:
                yield key

    def __contains__(self, key: str) -> bool:
        """Whether ``key``'s last change is still remembered."""
        return key in self._changed

    def __len__(self) -> int:
        return len(self._changed)
