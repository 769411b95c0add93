"""Client-server workload against a real server: users, rooms, messages, syncs, long-polls.

Run: ``.venv/bin/python tests/bench/bench_client.py [--users 50 --rooms 10 --messages 2000
--concurrency 8]``. Prints per phase: ops/s, p50/p95/p99 latency, and server CPU ms per
operation (utime+stime of the server process from /proc, divided by operations: the
figure that stays stable on a shared machine), then peak RSS and database size, each
compared with the targets of issue #4 (Synapse 1.163 on SQLite, same shape, measured
on this kind of machine, in brackets).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import make_config, registration_mac_for_tests, start_server  # noqa: E402

V3 = "/_matrix/client/v3"
TARGETS = {  # phase: (target CPU ms per op, Synapse's figure)
    "send": (6.0, 30.0),
    "initial sync": (30.0, 130.0),
    "incremental sync": (1.5, 4.0),
}
WAKE_P99_TARGET_MS, SYNAPSE_WAKE_P99_MS = 30.0, 264.0
PEAK_RSS_TARGET_MB, DB_TARGET_MB = 70.0, 15.0


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def quiesce(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until the server's background work (e.g. push evaluation of earlier sends)
    is done, so each phase's CPU figure is its own."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        before = cpu_ms(pid)
        await trio.sleep(0.3)
        if cpu_ms(pid) - before < 5:
            return


class Phase:
    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.latencies: list[float] = []

    async def run(self, jobs: list[Callable[[], Awaitable[None]]], concurrency: int) -> None:
        limiter = trio.CapacityLimiter(concurrency)
        await quiesce(self.pid)
        cpu0, t0 = cpu_ms(self.pid), time.perf_counter()

        async def one(job: Callable[[], Awaitable[None]]) -> None:
            async with limiter:
                started = time.perf_counter()
                await job()
                self.latencies.append((time.perf_counter() - started) * 1000)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)
        self.wall = time.perf_counter() - t0
        # Count the background work the phase caused (e.g. push evaluation of sends).
        await quiesce(self.pid)
        self.cpu_per_op = (cpu_ms(self.pid) - cpu0) / max(1, len(jobs))

    def report(self) -> str:
        lat = self.latencies
        line = (
            f"{self.name:<17} {len(lat):>6} ops {len(lat) / self.wall:>8.0f}/s"
            f"  p50 {pct(lat, 50):6.1f}  p95 {pct(lat, 95):6.1f}  p99 {pct(lat, 99):6.1f} ms"
            f"  CPU {self.cpu_per_op:6.2f} ms/op"
        )
        if self.name in TARGETS:
            target, synapse = TARGETS[self.name]
            verdict = "OK" if self.cpu_per_op <= target else "OVER TARGET"
            line += f"  (target <= {target}, Synapse {synapse}) {verdict}"
        return line


async def workload(args: argparse.Namespace, base: str, secret: str, pid: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        tokens: list[str] = []
        for i in range(args.users):
            user = f"bench{i}"
            nonce = (await c.get("/_synapse/admin/v1/register")).json()["nonce"]
            r = await c.post(
                "/_synapse/admin/v1/register",
                json={
                    "nonce": nonce,
                    "username": user,
                    "password": "pw",
                    "admin": False,
                    "mac": registration_mac_for_tests(secret, nonce, user, "pw", False),
                },
            )
            tokens.append(r.json()["access_token"])
        auth = [{"Authorization": f"Bearer {t}"} for t in tokens]
        rooms = []
        for r_i in range(args.rooms):
            r = await c.post(
                f"{V3}/createRoom",
                headers=auth[0],
                json={"preset": "public_chat", "name": f"room {r_i}"},
            )
            rooms.append(r.json()["room_id"])
        for room in rooms:
            for h in auth[1:]:
                await c.post(f"{V3}/join/{room}", headers=h)

        counter = iter(range(10**9))

        def send_job(i: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                n = next(counter)
                r = await c.put(
                    f"{V3}/rooms/{rooms[i % len(rooms)]}/send/m.room.message/t{n}",
                    headers=auth[i % len(auth)],
                    json={"msgtype": "m.text", "body": f"message {n} with some text in it"},
                )
                assert r.status_code == 200, r.text

            return job

        phases = []
        send = Phase("send", pid)
        await send.run([send_job(i) for i in range(args.messages)], args.concurrency)
        phases.append(send)

        next_batch: dict[int, str] = {}

        def initial_job(u: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                r = await c.get(f"{V3}/sync", headers=auth[u])
                assert r.status_code == 200, r.text
                next_batch[u] = r.json()["next_batch"]

            return job

        initial = Phase("initial sync", pid)
        await initial.run([initial_job(u) for u in range(args.users)], args.concurrency)
        phases.append(initial)

        for i in range(args.rooms):  # something new in every room
            await send_job(i)()

        def incremental_job(u: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                r = await c.get(f"{V3}/sync", headers=auth[u], params={"since": next_batch[u]})
                assert r.status_code == 200, r.text
                next_batch[u] = r.json()["next_batch"]

            return job

        incremental = Phase("incremental sync", pid)
        await incremental.run([incremental_job(u) for u in range(args.users)] * 3, args.concurrency)
        phases.append(incremental)

        def whoami_job(u: int) -> Callable[[], Awaitable[None]]:
            async def job() -> None:
                r = await c.get(f"{V3}/account/whoami", headers=auth[u])
                assert r.status_code == 200, r.text

            return job

        # The HTTP stack and authentication alone, for comparison with the syncs.
        floor = Phase("whoami (floor)", pid)
        await floor.run([whoami_job(u) for u in range(args.users)] * 3, args.concurrency)
        phases.append(floor)

        wakes: list[float] = []
        for i in range(args.wakeups):
            waiter, sender = auth[1], auth[0]
            since = (
                await c.get(f"{V3}/sync", headers=waiter, params={"since": next_batch[1]})
            ).json()["next_batch"]
            next_batch[1] = since
            done = trio.Event()
            woke_at: list[float] = []

            async def wait(
                waiter: dict[str, str], since: str, woke_at: list[float], done: trio.Event
            ) -> None:
                r = await c.get(
                    f"{V3}/sync", headers=waiter, params={"since": since, "timeout": 30000}
                )
                woke_at.append(time.perf_counter())
                next_batch[1] = r.json()["next_batch"]
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait, waiter, since, woke_at, done)
                await trio.sleep(0.05)
                sent_at = time.perf_counter()
                await c.put(
                    f"{V3}/rooms/{rooms[0]}/send/m.room.message/w{i}",
                    headers=sender,
                    json={"msgtype": "m.text", "body": "wake"},
                )
                await done.wait()
            wakes.append((woke_at[0] - sent_at) * 1000)

        print()
        for phase in phases:
            print(phase.report())
        p99 = pct(wakes, 99)
        print(
            f"{'long-poll wake-up':<17} {len(wakes):>6} ops  p50 {pct(wakes, 50):6.1f}"
            f"  p95 {pct(wakes, 95):6.1f}  p99 {p99:6.1f} ms  (from the send's start; target p99 <="
            f" {WAKE_P99_TARGET_MS}, Synapse {SYNAPSE_WAKE_P99_MS})"
            f" {'OK' if p99 <= WAKE_P99_TARGET_MS else 'OVER TARGET'}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--wakeups", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pocket-bench-client-"))
    config = make_config(
        work,
        rc_message={"per_second": 100000, "burst_count": 100000},
        rc_registration={"per_second": 100000, "burst_count": 100000},
    )
    server = start_server(config)
    try:
        pid = server.proc.pid
        idle = status_mb(pid, "VmRSS")
        trio.run(workload, args, server.base_url, server.shared_secret, pid)
        peak = status_mb(pid, "VmHWM")
    finally:
        server.stop()
    db = sum(p.stat().st_size for p in (work / "data").glob("homeserver.db*"))
    print(
        f"idle RSS at start {idle:.1f} MB; peak RSS {peak:.1f} MB"
        f" (target <= {PEAK_RSS_TARGET_MB}, Synapse 163)"
        f" {'OK' if peak <= PEAK_RSS_TARGET_MB else 'OVER TARGET'}"
    )
    print(
        f"database {db / 1e6:.1f} MB (target <= {DB_TARGET_MB}, Synapse 79)"
        f" {'OK' if db / 1e6 <= DB_TARGET_MB else 'OVER TARGET'}"
    )
    print(
        f"shape: {args.users} users, {args.rooms} rooms, {args.messages} messages,"
        f" concurrency {args.concurrency}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
