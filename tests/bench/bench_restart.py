"""Restart after a crash: kill -9 under load, start again, time until the server answers.

Run: ``.venv/bin/python tests/bench/bench_restart.py [--cycles 20] [--pyz dist/pocket.pyz]``.
Each cycle: a client sends messages as fast as it can, the server is killed with
SIGKILL mid-stream, and is started again; the time is from the exec until
``/_matrix/client/versions`` answers 200 (the port is fixed, so a client would
reconnect to it). Afterwards every acknowledged message must be in the room.
Issue #15 measured 1.7 s p50 on this x86 machine (6.6 s on an emulated Pi) and asks for
well under a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import make_config, registration_mac_for_tests  # noqa: E402

TARGET_P50_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(command: list[str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    return proc, started


def wait_up(base: str, proc: subprocess.Popen[bytes], started: float) -> float:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/_matrix/client/versions", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.005)


def register(base: str, secret: str) -> str:
    nonce = httpx.get(f"{base}/_synapse/admin/v1/register").json()["nonce"]
    mac = registration_mac_for_tests(secret, nonce, "bench", "bench password", admin=False)
    body = {"nonce": nonce, "username": "bench", "password": "bench password", "mac": mac}
    r = httpx.post(f"{base}/_synapse/admin/v1/register", json=body)
    r.raise_for_status()
    return str(r.json()["access_token"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--pyz", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        config = make_config(tmp, rc_message={"per_second": 1000, "burst_count": 1000})
        data = yaml.safe_load(config.read_text())
        data["listeners"][0]["port"] = port
        config.write_text(yaml.safe_dump(data))
        base = f"http://127.0.0.1:{port}"
        if args.pyz:
            command = [sys.executable, str(args.pyz.resolve()), "run", "-c", str(config)]
        else:
            command = [sys.executable, "-m", "pocketserver", "run", "-c", str(config)]
        log = tmp / "server.log"
        env_note = "pyz" if args.pyz else "source tree"
        proc, started = start(command, tmp, log)
        first = wait_up(base, proc, started)
        token = register(base, str(data["registration_shared_secret"]))
        auth = {"Authorization": f"Bearer {token}"}
        room = httpx.post(f"{base}/_matrix/client/v3/createRoom", json={}, headers=auth).json()[
            "room_id"
        ]
        acknowledged: list[str] = []
        times: list[float] = []
        for _cycle in range(args.cycles):
            stop = threading.Event()

            def load(stop: threading.Event = stop) -> None:
                with httpx.Client(base_url=base, headers=auth, timeout=5) as c:
                    while not stop.is_set():
                        body = uuid.uuid4().hex
                        try:
                            r = c.put(
                                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{body}",
                                json={"msgtype": "m.text", "body": body},
                            )
                        except httpx.TransportError:
                            return
                        if r.status_code == 200:
                            acknowledged.append(body)

            thread = threading.Thread(target=load)
            thread.start()
            time.sleep(0.5)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            thread.join()
            proc, started = start(command, tmp, log)
            times.append(wait_up(base, proc, started))
        # Every acknowledged message is in the room.
        seen: set[str] = set()
        with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
            token_from = None
            while True:
                params: dict[str, str] = {"dir": "b", "limit": "1000"}
                if token_from:
                    params["from"] = token_from
                page = c.get(f"/_matrix/client/v3/rooms/{room}/messages", params=params).json()
                for ev in page.get("chunk", []):
                    body = ev.get("content", {}).get("body")
                    if isinstance(body, str):
                        seen.add(body)
                token_from = page.get("end")
                if not token_from or not page.get("chunk"):
                    break
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        lost = [b for b in acknowledged if b not in seen]
        times.sort()
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"server from the {env_note}; first start {first:.2f} s")
        print(
            f"restart after kill -9, {len(times)} cycles: p50 {p50:.2f} s, p95 {p95:.2f} s, "
            f"max {times[-1]:.2f} s"
        )
        print(f"acknowledged messages: {len(acknowledged)}, lost: {len(lost)}")
        verdict = "OK" if p50 <= TARGET_P50_S and not lost else "OVER"
        print(f"target p50 <= {TARGET_P50_S} s and nothing lost: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
