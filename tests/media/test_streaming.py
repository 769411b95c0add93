"""The streamed request body: no whole-body limit, and backpressure past HIGH_WATER."""

from __future__ import annotations

import trio

from pocketserver.api.streaming import HIGH_WATER, StreamedBody


async def test_backpressure_until_the_route_reads() -> None:
    body = StreamedBody(None)
    with trio.move_on_after(0.1) as scope:
        await body.wait_for_room()
    assert not scope.cancelled_caught  # room at first
    body.append(b"x" * HIGH_WATER)
    with trio.move_on_after(0.1) as scope:
        await body.wait_for_room()
    assert scope.cancelled_caught  # full: the connection stops receiving
    assert await body.__anext__() == b"x" * HIGH_WATER
    with trio.move_on_after(0.1) as scope:
        await body.wait_for_room()
    assert not scope.cancelled_caught
    body.append(b"end")
    body.set_complete()
    parts = [part async for part in body]
    assert parts == [b"end"]


async def test_no_size_limit_from_content_length() -> None:
    body = StreamedBody(10**12)
    body.append(b"a" * 10)
    body.set_complete()
    assert [p async for p in body] == [b"a" * 10]
