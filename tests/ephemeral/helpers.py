"""Shared bits for the ephemeral stream tests."""

from __future__ import annotations

from pocketserver.core.event_filter import SyncFilter
from pocketserver.sync.sources import SyncContext

ALICE = "@alice:local.test"
BOB = "@bob:local.test"
CAROL = "@carol:local.test"
ROOM = "!room:local.test"
OTHER = "!other:local.test"


def context(
    user_id: str = ALICE,
    joined: list[str] | None = None,
    new_rooms: set[str] | None = None,
    flt: SyncFilter | None = None,
) -> SyncContext:
    return SyncContext(
        user_id=user_id,
        device_id="DEV",
        since=None,
        full_state=False,
        filter=flt or SyncFilter(),
        joined_rooms=[ROOM, OTHER] if joined is None else joined,
        new_rooms=new_rooms or set(),
        body={"rooms": {"join": {}}, "presence": {"events": []}},
    )


def ephemeral(ctx: SyncContext, room_id: str) -> list[dict[str, object]]:
    rooms = ctx.body["rooms"]
    assert isinstance(rooms, dict)
    entry = rooms["join"].get(room_id)
    return [] if entry is None else list(entry["ephemeral"]["events"])


class FakeWallClock:
    """Milliseconds that tests move by hand."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now
