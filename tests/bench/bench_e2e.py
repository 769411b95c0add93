"""Encryption figures: server CPU and latency per /keys/claim and per to-device send.

Run: ``.venv/bin/python tests/bench/bench_e2e.py [--ops 500]``. Starts the real server,
has a device upload one-time keys, then measures another user claiming them one by one,
and sending to-device messages to that device. Server CPU is the process's utime+stime
delta from /proc divided by operations (stable on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nacl.signing

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e_keys.keys import device_keys, signed_otk  # noqa: E402
from tests.harness import make_config, start_server  # noqa: E402

V3 = "/_matrix/client/v3"


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def measure(name: str, pid: int, ops: int, op: object) -> None:
    assert callable(op)
    latencies = []
    cpu0 = cpu_ms(pid)
    for i in range(ops):
        started = time.perf_counter()
        op(i)
        latencies.append((time.perf_counter() - started) * 1000)
    time.sleep(0.5)
    per_op = (cpu_ms(pid) - cpu0) / ops
    print(
        f"{name:<18} {ops} ops  p50 {pct(latencies, 50):5.2f}  p95 {pct(latencies, 95):5.2f}"
        f"  p99 {pct(latencies, 99):5.2f} ms  server CPU {per_op:5.2f} ms/op"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pocket-bench-e2e-"))
    server = start_server(make_config(work))
    try:
        pid = server.proc.pid
        alice = server.register("alice")
        bob = server.register("bob")
        a_h = {"Authorization": f"Bearer {alice['access_token']}"}
        b_h = {"Authorization": f"Bearer {bob['access_token']}"}
        bob_id, bob_dev = bob["user_id"], bob["device_id"]
        key = nacl.signing.SigningKey.generate()
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            for start in range(0, args.ops, 100):
                otks = {
                    f"signed_curve25519:K{n}": signed_otk(bob_id, bob_dev, key, n)
                    for n in range(start, min(start + 100, args.ops))
                }
                body: dict[str, object] = {"one_time_keys": otks}
                if start == 0:
                    body["device_keys"] = device_keys(bob_id, bob_dev, key)
                r = c.post(f"{V3}/keys/upload", headers=b_h, json=body)
                assert r.status_code == 200, r.text

            def claim(_: int) -> None:
                r = c.post(
                    f"{V3}/keys/claim",
                    headers=a_h,
                    json={"one_time_keys": {bob_id: {bob_dev: "signed_curve25519"}}},
                )
                assert r.status_code == 200, r.text
                assert r.json()["one_time_keys"][bob_id][bob_dev], r.text

            def to_device(i: int) -> None:
                r = c.put(
                    f"{V3}/sendToDevice/m.room_key_request/t{i}",
                    headers=a_h,
                    json={"messages": {bob_id: {bob_dev: {"action": "request", "n": i}}}},
                )
                assert r.status_code == 200, r.text

            measure("/keys/claim", pid, args.ops, claim)
            measure("to-device send", pid, args.ops, to_device)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
