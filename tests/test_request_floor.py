"""The per-request fast paths keep their behaviour: database worker threads, the
once-a-second log time and Date header, the reused JSON encoder, the access log line."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from wsgiref.handlers import format_date_time

import pytest
import trio

from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.logs import DATE_FORMAT, LOG_FORMAT, SecondCachedFormatter
from pocketserver.server import _HypercornConfig
from pocketserver.services import build_services
from pocketserver.storage.db import Database, run_in_worker
from tests.harness import make_config, start_server

MEMORY = 8 * 1024 * 1024


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "homeserver.db", memory_bytes=MEMORY)
    yield database
    database.close()


# --- database worker threads -------------------------------------------------------------


async def test_worker_runs_off_the_loop_and_returns_or_raises() -> None:
    limiter = trio.CapacityLimiter(1)
    loop_thread = threading.get_ident()
    assert await run_in_worker(limiter, threading.get_ident) != loop_thread
    assert await run_in_worker(limiter, divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        await run_in_worker(limiter, divmod, 1, 0)
    assert limiter.borrowed_tokens == 0


async def test_worker_threads_are_not_renamed_per_call() -> None:
    names = [
        await run_in_worker(trio.CapacityLimiter(1), lambda: threading.current_thread().name)
        for _ in range(3)
    ]
    # trio's cache names its threads once ("Trio thread N"); nothing renames them per call.
    assert all(name.startswith("Trio thread") for name in names)


async def test_limiter_bounds_concurrent_workers() -> None:
    limiter = trio.CapacityLimiter(2)
    lock = threading.Lock()
    running = peak = 0

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(run_in_worker, limiter, work)
    assert peak == 2
    assert limiter.borrowed_tokens == 0


async def test_a_cancelled_write_still_finishes_and_commits(db: Database) -> None:
    started = threading.Event()

    def slow_insert(conn: sqlite3.Connection) -> None:
        started.set()
        time.sleep(0.2)
        conn.execute("CREATE TABLE marker (x INTEGER)")

    with trio.move_on_after(0.05) as scope:
        await db.write(slow_insert)
        await trio.lowlevel.checkpoint()  # where the cancellation is delivered
    assert scope.cancel_called
    assert scope.cancelled_caught
    assert started.is_set()

    def has_marker(conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marker'")
        return bool(row.fetchone()[0])

    # Not abandoned: the write ran to its commit before the cancellation was delivered.
    assert await db.read(has_marker)
    assert db.statistics().readers_busy == 0


async def test_cancelled_before_a_slot_runs_nothing() -> None:
    limiter = trio.CapacityLimiter(1)
    ran: list[int] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await run_in_worker(limiter, ran.append, 1)
    assert ran == []
    assert limiter.borrowed_tokens == 0


# --- log time, Date header ---------------------------------------------------------------


def _record(created: float, msg: str = "req-1 GET /x 200 1.0ms -") -> logging.LogRecord:
    record = logging.LogRecord("pocketserver.access", logging.INFO, __file__, 1, msg, (), None)
    record.created = created
    record.msecs = 0
    return record


def test_cached_formatter_writes_what_the_plain_one_does() -> None:
    plain = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    cached = SecondCachedFormatter()
    start = time.time()
    for created in (start, start + 0.3, start + 1.0, start + 1.9, start + 61, start + 0.5):
        record = _record(created)
        assert cached.format(record) == plain.format(_record(created))


def test_date_header_is_the_current_http_date() -> None:
    config = _HypercornConfig()
    config.include_server_header = False
    before = time.time()
    headers = config.response_headers("h11")
    assert [name for name, _ in headers] == [b"date"]
    value = headers[0][1].decode("ascii")
    assert value in {format_date_time(before), format_date_time(time.time())}
    assert abs(parsedate_to_datetime(value).timestamp() - before) < 2
    again = config.response_headers("h11")
    assert again == headers or again[0][1] == format_date_time(time.time()).encode()
    config.include_server_header = True
    assert [name for name, _ in config.response_headers("h11")] == [b"date", b"server"]


# --- JSON answers and the access log ---------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path)))
    app = create_app(services)

    @app.route("/echo")
    async def echo() -> dict[str, object]:
        return {"z": 1, "a": "héllo ☃", "nested": {"b": [1, 2.5, None, True]}}

    yield app
    services.db.close()


async def test_json_answers_are_compact_unsorted_utf8(app) -> None:
    r = await app.test_client().get("/echo")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = await r.get_data(as_text=True)
    expected = {"z": 1, "a": "héllo ☃", "nested": {"b": [1, 2.5, None, True]}}
    assert body == json.dumps(expected, ensure_ascii=False, separators=(",", ":")) + "\n"
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_access_line_has_id_method_path_status_time_user(
    app, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pocketserver.access")
    r = await app.test_client().get("/echo?access_token=secret")
    assert r.status_code == 200
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "pocketserver.access"]
    assert len(lines) == 1
    request_id, method, path, status, took, user = lines[0].split(" ")
    assert request_id.startswith("req-")
    assert (method, path, status, user) == ("GET", "/echo", "200", "-")
    assert took.endswith("ms")
    assert "secret" not in lines[0]


# --- on the wire --------------------------------------------------------------------------


def test_answers_on_the_wire(tmp_path: Path) -> None:
    server = start_server(make_config(tmp_path))
    try:
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            # Three requests on one keep-alive connection, the last a HEAD.
            sock.sendall(
                b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /_matrix/client/v3/nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                b"HEAD /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            raw = b""
            while raw.count(b"\r\n\r\n") < 3:  # the HEAD answer is headers only
                raw += sock.recv(65536)
    finally:
        server.stop()
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"]) if len(answers) < 2 else 0
        answers.append((lines[0], headers, rest[:length]))
        raw = rest[length:]
    (status1, headers1, body1), (status2, _, body2), (status3, headers3, body3) = answers
    assert status1 == "HTTP/1.1 200 "
    assert "v1.11" in json.loads(body1)["versions"]
    assert body1.endswith(b"}\n")
    assert parsedate_to_datetime(headers1["date"]).timestamp() == pytest.approx(time.time(), abs=60)
    assert headers1["access-control-allow-origin"] == "*"
    assert status2 == "HTTP/1.1 404 "
    assert json.loads(body2)["errcode"] == "M_UNRECOGNIZED"
    assert status3 == "HTTP/1.1 200 "
    assert headers3["content-length"] == headers1["content-length"]
    assert body3 == b""
