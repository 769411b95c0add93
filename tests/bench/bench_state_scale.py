"""Big rooms (issue #11): state resolution, state storage and /members at scale.

Run by hand: ``.venv/bin/python tests/bench/bench_state_scale.py [--members 20000]``
(``--parts resolve,storage,members``). Each measurement runs in its own process, so
its peak RSS is its own.

1. **resolve**: a room of ``--members`` joins (room v10; built with the state res test
   builder, stored as it arrives over federation, the auth-chain index kept on insert)
   forked into ``--forks`` branches (topics, leaves, kicks, a ban, power changes).
   The states at the fork are resolved *before* (every event of the state sets and of
   their auth chains loaded, as the room writer did) and *after* (delta resolution:
   the auth difference from the index, only what the algorithm reads loaded): time,
   events loaded, peak RSS growth, and the longest stall of the trio event loop
   while it runs (a task ticking every 1 ms).
2. **storage**: ``--members`` joins through the room writer: state-group rows per
   state change (target <= 2) and auth-chain index rows per state event.
3. **members**: the members of that room as ``/members`` read them before (the whole
   visible state, then one answer) and now (streamed a page at a time), in process:
   time and peak of traced Python allocations; then ``GET /members`` and
   ``/joined_members`` from the real server (a subprocess) over HTTP, with the
   server's RSS; and a user directory search.

Measured on the shared 2-core dev box (Dec 2026; "main" = ``--main`` on the code
before issue #11's index; its process peak includes the decoded states, so compare
the growth):

- resolve, 20,000 members: main 0.74 s, peak RSS +69 MB, loop stall 250 ms; now
  0.28 s, 56 events loaded (of 20,033), +0 MB, stall 15 ms. 50,000 members: main
  1.90 s, +160 MB, stall 693 ms; now 0.75 s, 56 events, +0 MB, stall 26 ms.
- storage, 20,000 joins through the writer (818/s): 1.00 state row per state change;
  the index adds 4.00 rows per state event. 50,000 joins: 693/s (before the writer
  kept the newest state cached: about 60/s by then), 1.00 row per change.
- members, 20,000: reading them as before peaks at 97 MB of Python objects, streamed
  at 4.8 MB; the real server answers ``/members`` in 0.65 s (5.7 MB) with its RSS
  going from 61 to 68 MB. 50,000: 236 MB before, 4.8 MB streamed; the real server
  1.47 s (14.2 MB), RSS 61 to 68 MB; a user directory search 0.16 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pocketserver.cache import MemoryBudget  # noqa: E402
from pocketserver.core.crypto import generate_signing_key  # noqa: E402
from pocketserver.core.events import auth_event_ids  # noqa: E402
from pocketserver.rooms.create import RoomSettings, create_room  # noqa: E402
from pocketserver.rooms.resolver import StateResolver  # noqa: E402
from pocketserver.rooms.store import RoomStore  # noqa: E402
from pocketserver.rooms.writer import RoomWriter  # noqa: E402
from pocketserver.storage import events as event_store  # noqa: E402
from pocketserver.storage import state as state_store  # noqa: E402
from pocketserver.storage.db import Database  # noqa: E402
from pocketserver.streams.notifier import Notifier  # noqa: E402
from tests.core.test_state_res_builder import ALICE, BOB, CAROL, Room  # noqa: E402

VERSION = "10"
MEMORY_BUDGET = 64 << 20
STORAGE_TARGET = 2.0
SERVER = "bench.test"


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- building -----------------------------------------------------------------------------


def build_forked_room(members: int, forks: int) -> tuple[Room, list[dict]]:
    rng = random.Random(members)
    room = Room(VERSION)
    state = room.base(BOB, CAROL)
    levels = room.pl({ALICE: 100, BOB: 50, CAROL: 50}, events={"m.room.topic": 0}, kick=50)
    _, state = room.send(state, "m.room.power_levels", ALICE, levels, "")
    users = [f"@user{i}:example.org" for i in range(members)]
    for user in users:
        _, state = room.send(state, "m.room.member", user, {"membership": "join"}, user)
    branches = []
    for n in range(forks):
        fork = dict(state)
        _, fork = room.send(fork, "m.room.topic", rng.choice(users), {"topic": f"fork {n}"}, "")
        for user in rng.sample(users, 3):
            _, fork = room.send(fork, "m.room.member", user, {"membership": "leave"}, user)
        kicked = rng.choice(users)
        _, fork = room.send(fork, "m.room.member", BOB, {"membership": "leave"}, kicked)
        banned = rng.choice(users)
        _, fork = room.send(fork, "m.room.member", ALICE, {"membership": "ban"}, banned)
        if n % 2 == 0:
            changed = room.pl({ALICE: 100, BOB: 50, CAROL: 50 + n}, kick=50)
            _, fork = room.send(fork, "m.room.power_levels", ALICE, changed, "")
        branches.append(fork)
    return room, branches


def store_room(db: Database, room: Room) -> None:
    ids = list(room.events)

    def txn(conn, chunk):  # type: ignore[no-untyped-def]
        for event_id in chunk:
            pdu = room.events[event_id]
            event_store.insert_event(
                conn,
                event_id,
                room.room_id,
                dict(pdu),
                depth=int(pdu.get("depth", 0)),  # type: ignore[call-overload]
                prev_ids=[],
                auth_ids=auth_event_ids(pdu, VERSION),
                received_ms=0,
                outlier=True,
            )

    for i in range(0, len(ids), 2000):
        db.write_sync(txn, ids[i : i + 2000])


def _encode_states(states: list[dict]) -> list[list[list[str]]]:
    return [[[t, sk, eid] for (t, sk), eid in s.items()] for s in states]


def _decode_states(raw: list[list[list[str]]]) -> list[dict]:
    return [{(t, sk): eid for t, sk, eid in s} for s in raw]


# --- children -----------------------------------------------------------------------------


async def _watch_loop(stalls: list[float], stop: trio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await trio.sleep(0.001)
        now = time.perf_counter()
        stalls.append(now - last)
        last = now


async def child_resolve(work: Path, mode: str) -> dict[str, object]:
    states = _decode_states(json.loads((work / "states.json").read_text()))
    budget = MemoryBudget(MEMORY_BUDGET)
    db = Database(work / "room.db", memory_bytes=budget.sqlite_bytes, synchronous="normal")
    store = RoomStore(db, budget)
    resolver = StateResolver(store)
    base_kb = peak_rss_kb()
    stalls: list[float] = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_loop, stalls, stop)
        await trio.sleep(0.01)
        start = time.perf_counter()
        if mode == "before":
            result = await resolver._resolve_full(VERSION, states, None)
        else:
            result = await resolver.resolve(VERSION, states)
        seconds = time.perf_counter() - start
        stop.set()
    db.close()
    return {
        "seconds": seconds,
        "events_loaded": resolver.statistics().events_loaded,
        "peak_rss_growth_mb": (peak_rss_kb() - base_kb) / 1024,
        "peak_rss_mb": peak_rss_kb() / 1024,
        "longest_loop_stall_ms": max(stalls, default=0.0) * 1000,
        "result": sorted(f"{t}|{sk}|{e}" for (t, sk), e in result.items()),
    }


async def child_storage(work: Path, members: int) -> dict[str, object]:
    budget = MemoryBudget(MEMORY_BUDGET)
    db = Database(work / "joins.db", memory_bytes=budget.sqlite_bytes, synchronous="normal")
    writer = RoomWriter(RoomStore(db, budget), SERVER, generate_signing_key("b_1"), Notifier())
    owner = f"@owner:{SERVER}"
    room_id = await create_room(
        writer, owner, RoomSettings(room_version=VERSION, preset="public_chat")
    )
    start = time.perf_counter()
    for i in range(members):
        user = f"@user{i}:{SERVER}"
        await writer.send_event(room_id, user, "m.room.member", {"membership": "join"}, user)
    seconds = time.perf_counter() - start

    def counts(conn):  # type: ignore[no-untyped-def]
        changes = conn.execute(
            "SELECT count(*) FROM events WHERE room_id = ? AND state_key IS NOT NULL", (room_id,)
        ).fetchone()[0]
        rows = state_store.state_storage_rows(conn, room_id)
        chains = conn.execute("SELECT count(*) FROM event_auth_chains").fetchone()[0]
        links = conn.execute("SELECT count(*) FROM event_auth_chain_links").fetchone()[0]
        return changes, rows, chains, links

    changes, rows, chains, links = db.read_sync(counts)
    db.close()
    (work / "room_id").write_text(room_id)
    return {
        "joins_per_s": members / seconds,
        "state_changes": changes,
        "state_rows": rows,
        "rows_per_change": rows / changes,
        "index_rows_per_state_event": (chains + links) / changes,
    }


async def child_members(work: Path) -> dict[str, object]:
    """The room of the storage part, served by the real app over its database."""
    from pocketserver.api.json_stream import stream_object
    from pocketserver.api.rooms import _client_events
    from pocketserver.config import load_config
    from pocketserver.errors import MatrixError
    from pocketserver.rooms.client_events import client_event
    from pocketserver.services import build_services
    from tests.harness import make_config

    room_id = (work / "room_id").read_text()
    database = {"name": "sqlite3", "args": {"database": str(work / "joins.db")}}
    shutil.rmtree(work / "srv", ignore_errors=True)
    (work / "srv").mkdir()
    services = await build_services(
        load_config(make_config(work / "srv", SERVER, database=database))
    )
    with contextlib.suppress(MatrixError):  # registered by an earlier run
        await services.accounts.register("owner", "a fine long password")
    figures: dict[str, object] = {}
    owner = f"@owner:{SERVER}"

    async def before() -> int:
        """What /members did before: every member event read, then one answer."""
        events = await services.room_client.members(owner, room_id)
        now = int(time.time() * 1000)
        return len(json.dumps({"chunk": [client_event(ev, now) for ev in events]}))

    async def after() -> int:
        """What the route streams now, drained as the connection would send it."""
        stream = await services.room_client.current_members(owner, room_id)
        assert stream is not None
        size = 0
        async for chunk in stream_object({"chunk": _client_events(stream, 0)}):
            size += len(chunk)
        return size

    for name, fn in (("before", before), ("after", after)):
        print(f"members: {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        size = await fn()
        seconds = time.perf_counter() - start
        services.room_store._events.clear()  # the same (cold) cache for both
        tracemalloc.start()
        await fn()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        services.room_store._events.clear()
        figures[name] = (
            f"{seconds:.2f} s, {size / 1e6:.1f} MB answer, traced Python peak"
            f" {traced_peak / 1e6:.1f} MB"
        )
    from pocketserver.storage.user_directory import search_users

    print("members: user directory", file=sys.stderr, flush=True)
    tracemalloc.start()
    start = time.perf_counter()
    found = await services.db.read(search_users, f"@someone:{SERVER}", "user1234", 10)
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    figures["user directory search (SQL, LIMIT 10)"] = (
        f"{seconds:.2f} s, {len(found)} found, traced Python peak {traced_peak / 1e6:.2f} MB"
    )
    services.db.close()
    figures.update(_members_through_the_server(work, room_id))
    return figures


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _members_through_the_server(work: Path, room_id: str) -> dict[str, object]:
    """The real server on that database: GET /members over HTTP, its time and the
    server's peak RSS (VmHWM) growth over its RSS before the request."""
    import httpx

    from tests.harness import running_server

    figures: dict[str, object] = {}
    with running_server(work / "srv" / "homeserver.yaml", timeout=120) as server:
        login = server.login("owner", "a fine long password")
        token = login.json()["access_token"]
        with httpx.Client(base_url=server.base_url, timeout=300) as http:
            http.headers["Authorization"] = f"Bearer {token}"
            for name in ("members", "joined_members"):
                before = _vm(server.proc.pid, "VmRSS")
                start = time.perf_counter()
                r = http.get(f"/_matrix/client/v3/rooms/{room_id}/{name}")
                seconds = time.perf_counter() - start
                assert r.status_code == 200, r.text
                peak = _vm(server.proc.pid, "VmHWM")
                count = len(r.json()["chunk" if name == "members" else "joined"])
                figures[f"GET /{name} (real server)"] = (
                    f"{seconds:.2f} s, {count} entries, {len(r.content) / 1e6:.1f} MB; server RSS"
                    f" {before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB"
                )
    return figures


# "before" on an older checkout (``--main DIR``): that code's own room writer resolves the
# same states over its own database (built by its own insert_event: no index).
_BEFORE_ON_MAIN = """
import json, resource, sys, time, trio
from pathlib import Path
from pocketserver.cache import MemoryBudget
from pocketserver.core.crypto import generate_signing_key
from pocketserver.core.events import auth_event_ids
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage import events as event_store
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier

work, version = Path(sys.argv[1]), sys.argv[2]
raw = json.loads((work / "states.json").read_text())
states = [{(t, sk): e for t, sk, e in s} for s in raw]
path = work / "main.db"
if not path.exists():
    events = json.loads((work / "events.json").read_text())
    db = Database(path, memory_bytes=16 << 20, synchronous="normal")
    def txn(conn, chunk):
        for event_id, room_id, pdu in chunk:
            event_store.insert_event(conn, event_id, room_id, pdu, depth=pdu.get("depth", 0),
                prev_ids=[], auth_ids=auth_event_ids(pdu, version), received_ms=0, outlier=True)
    for i in range(0, len(events), 2000):
        db.write_sync(txn, events[i : i + 2000])
    db.close()

async def main():
    budget = MemoryBudget(64 << 20)
    db = Database(path, memory_bytes=budget.sqlite_bytes, synchronous="normal")
    key = generate_signing_key("b_1")
    writer = RoomWriter(RoomStore(db, budget), "bench.test", key, Notifier())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stalls, stop = [], trio.Event()
    async def watch():
        last = time.perf_counter()
        while not stop.is_set():
            await trio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.01)
        start = time.perf_counter()
        result = await writer._resolve(version, states)
        seconds = time.perf_counter() - start
        stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "events_loaded": -1,
        "peak_rss_growth_mb": (peak - base) / 1024, "peak_rss_mb": peak / 1024,
        "longest_loop_stall_ms": max(stalls) * 1000,
        "result": sorted(f"{t}|{sk}|{e}" for (t, sk), e in result.items())}))

trio.run(main)
"""


def run_before_on(main: Path, work: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _BEFORE_ON_MAIN, str(work), VERSION],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(main)},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_child(args: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20000)
    parser.add_argument("--forks", type=int, default=4)
    parser.add_argument("--parts", default="resolve,storage")
    parser.add_argument("--child")
    parser.add_argument("--work", help="keep the built room here (and reuse it)")
    parser.add_argument("--main", help="also resolve with the code of this checkout (before)")
    args = parser.parse_args(argv)
    if args.child:
        work = Path(args.work)
        if args.child in ("before", "after"):
            result = trio.run(child_resolve, work, args.child)
        elif args.child == "storage":
            result = trio.run(child_storage, work, args.members)
        else:
            result = trio.run(child_members, work)
        print(json.dumps(result))
        return 0
    parts = set(args.parts.split(","))
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="bench-state-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        if "resolve" in parts and not (work / "states.json").exists():
            start = time.perf_counter()
            room, states = build_forked_room(args.members, args.forks)
            built = time.perf_counter() - start
            db = Database(work / "room.db", memory_bytes=16 << 20, synchronous="normal")
            start = time.perf_counter()
            store_room(db, room)
            stored = time.perf_counter() - start
            db.close()
            (work / "states.json").write_text(json.dumps(_encode_states(states)))
            (work / "events.json").write_text(
                json.dumps([[e, room.room_id, pdu] for e, pdu in room.events.items()])
            )
            print(
                f"resolve: {args.members} members, {len(room.events)} events, {args.forks} forks"
                f" (built in {built:.1f} s, stored with the index in {stored:.1f} s)"
            )
        if "resolve" in parts:
            results = {}
            modes = ["before", "after"] + (["before on --main"] if args.main else [])
            for mode in modes:
                if mode == "before on --main":
                    results[mode] = r = run_before_on(Path(args.main), work)
                else:
                    results[mode] = r = run_child(["--child", mode, "--work", str(work)])
                loaded = "" if r["events_loaded"] == -1 else f", {r['events_loaded']} events loaded"
                print(
                    f"  {mode:6}: {r['seconds']:.3f} s{loaded},"
                    f" peak RSS +{r['peak_rss_growth_mb']:.1f} MB ({r['peak_rss_mb']:.0f} MB),"
                    f" longest event-loop stall {r['longest_loop_stall_ms']:.0f} ms"
                )
            same = all(r["result"] == results["after"]["result"] for r in results.values())
            print(f"  same resolved state: {same}")
            ok &= same
        if "storage" in parts or "members" in parts:
            r = run_child(
                ["--child", "storage", "--work", str(work), "--members", str(args.members)]
            )
            print(
                f"storage: {args.members} joins through the writer ({r['joins_per_s']:.0f}/s):"
                f" {r['state_rows']} state rows for {r['state_changes']} state changes ="
                f" {r['rows_per_change']:.2f} per change (target <= {STORAGE_TARGET});"
                f" auth-chain index {r['index_rows_per_state_event']:.2f} rows per state event"
            )
            ok &= float(r["rows_per_change"]) <= STORAGE_TARGET  # type: ignore[arg-type]
        if "members" in parts:
            r = run_child(["--child", "members", "--work", str(work)])
            for name, figures in r.items():
                print(f"members: {name}: {figures}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
