"""Media figures: 20 clients each uploading and downloading 20 MB at once, server RSS,
and thumbnailing a 12-megapixel JPEG.

Run: ``.venv/bin/python tests/bench/bench_media.py [--clients 20 --size-mb 20]``.
Prints upload/download throughput, the server's idle and peak RSS (VmHWM) against the
target (peak <= memory_budget + 30 MB: uploads and downloads are streamed, never held
whole), and the time to make Synapse's five default thumbnails of a 4000x3000 JPEG,
in-process and through the server.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import make_config, start_server  # noqa: E402

MEMORY_BUDGET_MB = 128
TARGET_EXTRA_MB = 30
CHUNK = 256 * 1024


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def body(seed: int, size: int) -> AsyncIterator[bytes]:
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    sent = 0
    while sent < size:
        part = block[: min(CHUNK, size - sent)]
        sent += len(part)
        yield part


def expected_digest(seed: int, size: int) -> str:
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    h = hashlib.sha256()
    sent = 0
    while sent < size:
        part = block[: min(CHUNK, size - sent)]
        sent += len(part)
        h.update(part)
    return h.hexdigest()


async def one_client(
    base: str, token: str, seed: int, size: int, times: dict[str, list[float]]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        t0 = time.perf_counter()
        r = await c.post("/_matrix/media/v3/upload", content=body(seed, size), headers=headers)
        r.raise_for_status()
        times["upload"].append(time.perf_counter() - t0)
        media_id = r.json()["content_uri"].rsplit("/", 1)[1]
        t0 = time.perf_counter()
        h = hashlib.sha256()
        async with c.stream(
            "GET", f"/_matrix/client/v1/media/download/bench.local/{media_id}", headers=headers
        ) as resp:
            resp.raise_for_status()
            async for part in resp.aiter_bytes():
                h.update(part)
        times["download"].append(time.perf_counter() - t0)
        assert h.hexdigest() == expected_digest(seed, size), "download differs from upload"


async def sample_rss(pid: int, peak: list[float], stop: trio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], status_mb(pid, "VmRSS"))
        await trio.sleep(0.05)


def jpeg_12mp() -> bytes:
    from PIL import Image

    im = Image.effect_mandelbrot((4000, 3000), (-2.0, -1.2, 1.0, 1.2), 100).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def thumbnail_in_process(data: bytes) -> float:
    from pocketserver.config.media import DEFAULT_THUMBNAIL_SIZES
    from pocketserver.media.thumbnails import generate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jpg"
        path.write_bytes(data)
        t0 = time.perf_counter()
        made = generate(path, "image/jpeg", list(DEFAULT_THUMBNAIL_SIZES), 32 * 1024 * 1024)
        elapsed = time.perf_counter() - t0
    assert len(made) == 5
    return elapsed


async def run(args: argparse.Namespace) -> None:
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(
            Path(tmp),
            server_name="bench.local",
            max_upload_size=f"{args.size_mb + 5}M",
            memory_budget=f"{MEMORY_BUDGET_MB}M",
        )
        server = start_server(config)
        try:
            pid = server.proc.pid
            tokens = [server.register(f"u{i}")["access_token"] for i in range(args.clients)]
            idle = status_mb(pid, "VmRSS")
            times: dict[str, list[float]] = {"upload": [], "download": []}
            peak = [idle]
            stop = trio.Event()
            t0 = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_rss, pid, peak, stop)
                async with trio.open_nursery() as clients:
                    for i, token in enumerate(tokens):
                        clients.start_soon(one_client, server.base_url, token, i, size, times)
                stop.set()
            wall = time.perf_counter() - t0
            hwm = status_mb(pid, "VmHWM")
            total_mb = 2 * args.clients * args.size_mb
            print(
                f"{args.clients} clients x {args.size_mb} MB up + down: {wall:.1f} s wall,"
                f" {total_mb / wall:.0f} MB/s through the server;"
                f" slowest upload {max(times['upload']):.1f} s,"
                f" slowest download {max(times['download']):.1f} s"
            )
            target = MEMORY_BUDGET_MB + TARGET_EXTRA_MB
            print(
                f"server RSS: idle {idle:.1f} MB, peak sampled {peak[0]:.1f} MB, VmHWM {hwm:.1f} MB"
                f" (+{hwm - idle:.1f} MB under load); target <= {target} MB"
                f" {'OK' if hwm <= target else 'OVER TARGET'}"
            )
            try:
                data = jpeg_12mp()
            except ImportError:
                print("Pillow not installed: no thumbnail figures")
                return
            print(f"12-megapixel JPEG ({len(data) / 1e6:.1f} MB):")
            print(f"  5 default thumbnails in-process: {thumbnail_in_process(data) * 1000:.0f} ms")
            headers = {"Authorization": f"Bearer {tokens[0]}", "Content-Type": "image/jpeg"}
            async with httpx.AsyncClient(base_url=server.base_url, timeout=600) as c:
                r = await c.post("/_matrix/media/v3/upload", content=data, headers=headers)
                media_id = r.json()["content_uri"].rsplit("/", 1)[1]
                t0 = time.perf_counter()
                r = await c.get(
                    f"/_matrix/client/v1/media/thumbnail/bench.local/{media_id}",
                    params={"width": 800, "height": 600},
                    headers=headers,
                )
                r.raise_for_status()
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                r = await c.get(
                    f"/_matrix/client/v1/media/thumbnail/bench.local/{media_id}",
                    params={"width": 96, "height": 96, "method": "crop"},
                    headers=headers,
                )
                again = time.perf_counter() - t0
            print(
                f"  through the server: first thumbnail right after upload {first * 1000:.0f} ms,"
                f" a stored one {again * 1000:.1f} ms; server VmHWM now"
                f" {status_mb(pid, 'VmHWM'):.1f} MB"
            )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(run, args)


if __name__ == "__main__":
    main()
