"""Foundation figures: pyz size, start-up time, idle RSS, RSS after 100 register+login cycles.

Run: ``.venv/bin/python tests/bench/bench_foundation.py [--pyz dist/pocket.pyz]``.
Without --pyz it runs the server from the source tree (``python -m pocketserver``).
Targets (issue #2, on the 2-core development machine): start <= 2 s, idle RSS <= 60 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import make_config, registration_mac_for_tests  # noqa: E402

START_TARGET_S = 2.0
IDLE_RSS_TARGET_MB = 60.0


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyz", type=Path, help="measure this pocket.pyz instead of the source")
    parser.add_argument("--port", type=int, default=18008)
    parser.add_argument("--cycles", type=int, default=100)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pocket-bench-"))
    config = make_config(work, bcrypt_rounds=12)
    data = yaml.safe_load(config.read_text())
    data["listeners"][0]["port"] = args.port
    config.write_text(yaml.safe_dump(data))
    secret = data["registration_shared_secret"]
    base = f"http://127.0.0.1:{args.port}"
    if args.pyz:
        print(f"pyz: {args.pyz} {args.pyz.stat().st_size / 1e6:.1f} MB")
        # Warm the shiv cache first: the first start on a machine unpacks the build.
        cmd = [sys.executable, str(args.pyz), "run", "-c", str(config)]
    else:
        cmd = [sys.executable, "-m", "pocketserver", "run", "-c", str(config)]

    results: dict[str, float] = {}
    runs = []
    for attempt in range(3):
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=base, timeout=5) as c:
                while True:
                    try:
                        if c.get("/_matrix/client/versions").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None:
                        raise RuntimeError("server exited during start")
                    time.sleep(0.01)
                runs.append(time.perf_counter() - started)
                if attempt < 2:
                    continue
                time.sleep(2)
                results["idle_rss_mb"] = rss_mb(proc.pid)
                cpu0 = cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                for i in range(args.cycles):
                    user, password = f"bench{i}", f"password {i}"
                    nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
                    r = c.post(
                        "/_synapse/admin/v1/register",
                        json={
                            "nonce": nonce,
                            "username": user,
                            "password": password,
                            "admin": False,
                            "mac": registration_mac_for_tests(secret, nonce, user, password, False),
                        },
                    )
                    assert r.status_code == 200, r.text
                    r = c.post(
                        "/_matrix/client/v3/login",
                        json={"type": "m.login.password", "user": user, "password": password},
                    )
                    assert r.status_code == 200, r.text
                results["cycles_s"] = time.perf_counter() - t0
                results["cycle_cpu_ms"] = (cpu_seconds(proc.pid) - cpu0) * 1000 / args.cycles
                results["rss_after_cycles_mb"] = rss_mb(proc.pid)
                results["peak_rss_mb"] = rss_mb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(30)
            if attempt < 2:
                # Fresh database each run so that the last run measures a clean start.
                for f in (work / "data").glob("homeserver.db*"):
                    f.unlink()

    results["start_s"] = min(runs)
    print(
        f"start to first /versions: {', '.join(f'{r:.2f}' for r in runs)} s "
        f"(best {results['start_s']:.2f} s; target <= {START_TARGET_S} s) "
        f"{'OK' if results['start_s'] <= START_TARGET_S else 'OVER TARGET'}"
    )
    print(
        f"idle RSS: {results['idle_rss_mb']:.1f} MB (target <= {IDLE_RSS_TARGET_MB} MB) "
        f"{'OK' if results['idle_rss_mb'] <= IDLE_RSS_TARGET_MB else 'OVER TARGET'}"
    )
    print(
        f"{args.cycles} register+login cycles (bcrypt 12 rounds, twice per cycle): "
        f"{results['cycles_s']:.1f} s, {results['cycle_cpu_ms']:.0f} ms server CPU per cycle"
    )
    print(
        f"RSS after the cycles: {results['rss_after_cycles_mb']:.1f} MB "
        f"(peak {results['peak_rss_mb']:.1f} MB)"
    )
    db = work / "data" / "homeserver.db"
    print(f"database: {db.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
