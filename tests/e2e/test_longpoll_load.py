"""500 concurrent idle /sync long-polls cost almost nothing, and one event wakes them all."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import trio

from tests.harness import make_config, running_server

POLLS = 500


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _cpu_s(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_500_idle_long_polls(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running_server(config) as s:
        token = s.register("poller")["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=POLLS + 20, max_keepalive_connections=POLLS + 20)
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60, limits=limits) as c:
            room = (await c.post("/_matrix/client/v3/createRoom", headers=headers, json={})).json()[
                "room_id"
            ]
            since = (await c.get("/_matrix/client/v3/sync", headers=headers)).json()["next_batch"]
            pid = s.proc.pid
            before = _rss_mb(pid)
            answers: list[dict[str, object]] = []

            async def poll() -> None:
                r = await c.get(
                    "/_matrix/client/v3/sync",
                    headers=headers,
                    params={"since": since, "timeout": 30000},
                )
                assert r.status_code == 200, r.text
                answers.append(r.json())

            async with trio.open_nursery() as nursery:
                for _ in range(POLLS):
                    nursery.start_soon(poll)
                # Wait until the server holds them all (idle in the notifier).
                await trio.sleep(4)
                cpu0 = _cpu_s(pid)
                await trio.sleep(2)
                idle_cpu = _cpu_s(pid) - cpu0
                during = _rss_mb(pid)
                assert not answers, "long-polls returned before anything happened"
                woken_at = time.perf_counter()
                await c.put(
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/wake",
                    headers=headers,
                    json={"msgtype": "m.text", "body": "everyone up"},
                )
            all_done = time.perf_counter() - woken_at
    growth = during - before
    print(
        f"\n{POLLS} idle long-polls: RSS {before:.1f} -> {during:.1f} MB (+{growth:.1f} MB,"
        f" {growth * 1024 / POLLS:.1f} KiB each), server CPU while idle {idle_cpu * 1000:.0f} ms"
        f" over 2 s, all {POLLS} answered {all_done:.2f} s after the event"
    )
    assert len(answers) == POLLS
    for body in answers:
        rooms = body["rooms"]
        assert isinstance(rooms, dict)
        assert room in rooms["join"]
    assert growth < 40, f"RSS grew {growth:.1f} MB for {POLLS} idle long-polls"
    assert idle_cpu < 0.5, f"idle long-polls burned {idle_cpu:.2f} s CPU in 2 s"
