"""Benchmark: resolve_state on a 5,000-member room with 50 concurrent state forks.

Run by hand: ``python tests/bench/bench_state_res.py [--members N] [--forks N]``.
Prints the wall time (best of a few runs, without tracing), the tracemalloc peak of
one traced run and the peak-RSS growth of the process during the runs, against the
targets (< 2 s, < 100 MB peak), for room v1 (state res v1), v10 (v2) and v12 (v2.1).

Each fork starts from the full room and adds: a topic, a name, ``--joins``
newcomers (default 2), one leave, one kick by a moderator, one ban by the admin
and (every fifth fork) a power levels change; so every fork conflicts with every
other on several keys and the auth difference holds every fork event.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pocketserver.core.state_res import resolve_state
from tests.core.test_state_res_builder import ALICE, BOB, Room

TARGET_SECONDS = 2.0
TARGET_PEAK_BYTES = 100 * 1024 * 1024


def build(version: str, members: int, forks: int, joins: int) -> tuple[Room, list[dict]]:
    room = Room(version)
    users = [f"@user{i}:example.org" for i in range(members)]
    state = room.base(BOB)
    levels = room.pl({ALICE: 100, BOB: 50}, events={"m.room.topic": 0})
    _, state = room.send(state, "m.room.power_levels", ALICE, levels, "")
    for user in users:
        _, state = room.send(state, "m.room.member", user, {"membership": "join"}, user)
    state_sets = []
    for f in range(forks):
        s = dict(state)
        _, s = room.send(s, "m.room.topic", users[f], {"topic": f"fork {f}"}, "")
        _, s = room.send(s, "m.room.name", ALICE, {"name": f"fork {f}"}, "")
        for j in range(joins):
            newcomer = f"@new{f}_{j}:example.org"
            _, s = room.send(s, "m.room.member", newcomer, {"membership": "join"}, newcomer)
        leaver = users[(7 * f + 1) % members]
        _, s = room.send(s, "m.room.member", leaver, {"membership": "leave"}, leaver)
        kicked = users[(7 * f + 2) % members]
        _, s = room.send(s, "m.room.member", BOB, {"membership": "leave"}, kicked)
        banned = users[(7 * f + 3) % members]
        _, s = room.send(s, "m.room.member", ALICE, {"membership": "ban"}, banned)
        if f % 5 == 0:
            levels = room.pl({ALICE: 100, BOB: 50, users[f]: 10 + f}, events={"m.room.topic": 0})
            _, s = room.send(s, "m.room.power_levels", ALICE, levels, "")
        state_sets.append(s)
    return room, state_sets


def measure(version: str, members: int, forks: int, joins: int, repeat: int) -> bool:
    t0 = time.perf_counter()
    room, state_sets = build(version, members, forks, joins)
    built = time.perf_counter() - t0
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = resolve_state(version, state_sets, room.events)
        times.append(time.perf_counter() - t0)
    rss_delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    tracemalloc.start()
    tracemalloc.reset_peak()
    resolve_state(version, state_sets, room.events)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = min(times)
    ok = best < TARGET_SECONDS and peak < TARGET_PEAK_BYTES
    print(
        f"room v{version}: {len(room.events)} events, {len(state_sets)} state sets of "
        f"~{len(state_sets[0])} entries (built in {built:.1f} s); result {len(result)} entries\n"
        f"  resolve_state: best {best:.3f} s of {repeat} (target < {TARGET_SECONDS} s), "
        f"tracemalloc peak {peak / 2**20:.1f} MB (target < {TARGET_PEAK_BYTES / 2**20:.0f} MB), "
        f"peak RSS growth {rss_delta / 2**20:.1f} MB -> {'OK' if ok else 'OVER TARGET'}"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--joins", type=int, default=2, help="newcomers per fork")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--versions", nargs="+", default=["1", "10", "12"])
    args = parser.parse_args(argv)
    results = [measure(v, args.members, args.forks, args.joins, args.repeat) for v in args.versions]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
