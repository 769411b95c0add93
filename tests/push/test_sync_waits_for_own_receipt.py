"""/sync waits for the evaluation of the syncing user's own read receipts (their
count reset), not for other users' receipts."""

from __future__ import annotations

import trio
import trio.testing

from pocketserver.push.evaluator import PushEvaluator


async def test_wait_evaluated_waits_for_the_users_own_receipts(autojump_clock: object) -> None:
    ev = PushEvaluator(None, None, "test.local")  # type: ignore[arg-type]
    gate = trio.Event()
    processed: list[str] = []

    async def process(items: list[object]) -> None:
        for item in items:
            await gate.wait()  # evaluation takes long
            processed.append(item.user_id)  # type: ignore[attr-defined]

    ev.process = process  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(ev.run)
        ev.on_receipt("@a:test.local", "!r:test.local", "m.read", "$e1", None)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await ev.wait_evaluated(0, timeout_s=10, user_id="@b:test.local")
        assert trio.current_time() == start  # not B's receipt: no wait
        await ev.wait_evaluated(0, timeout_s=2, user_id="@a:test.local")
        assert trio.current_time() - start == 2  # A's receipt is still being evaluated
        gate.set()
        await ev.wait_evaluated(0, timeout_s=10, user_id="@a:test.local")
        assert processed == ["@a:test.local"]
        start = trio.current_time()
        await ev.wait_evaluated(0, timeout_s=10, user_id="@a:test.local")
        assert trio.current_time() == start  # evaluated: nothing left to wait for
        nursery.cancel_scope.cancel()
