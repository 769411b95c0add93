"""A small application service on loopback (a thread): records what the homeserver
sends and answers from a table, for the end-to-end tests of the application service API."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: str
    authorization: str
    body: object


@dataclass
class FakeAppService:
    hs_token: str
    answers: dict[str, tuple[int, object]] = field(default_factory=dict)
    """Decoded path -> (status, JSON) for GET/POST; transactions answer {} by default."""
    seen: list[Seen] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    txn_ids: list[str] = field(default_factory=list)
    down: bool = False
    """While True, transactions answer 503."""
    on_request: Callable[[Seen], None] | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check():
                    return
            time.sleep(0.05)
        raise AssertionError(f"timed out; seen: {[(s.method, s.path) for s in self.seen]}")

    def event_ids(self) -> list[str]:
        with self.lock:
            return [str(e["event_id"]) for e in self.events]


def _handler(site: FakeAppService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            seen = Seen(
                self.command,
                path,
                parts.query,
                self.headers.get("Authorization", ""),
                json.loads(raw) if raw else None,
            )
            with site.lock:
                site.seen.append(seen)
            if site.on_request is not None:
                site.on_request(seen)
            if seen.authorization != f"Bearer {site.hs_token}":
                self._answer(403, {"errcode": "M_FORBIDDEN"})
                return
            if path.startswith("/_matrix/app/v1/transactions/") and self.command == "PUT":
                if site.down:
                    self._answer(503, {})
                    return
                txn_id = path.rsplit("/", 1)[1]
                with site.lock:
                    if txn_id not in site.txn_ids:  # the spec: a retried ID is a duplicate
                        site.txn_ids.append(txn_id)
                        assert isinstance(seen.body, dict)
                        site.events.extend(seen.body["events"])
                self._answer(200, {})
                return
            status, body = site.answers.get(path, (404, {"errcode": "M_NOT_FOUND"}))
            self._answer(status, body)

        do_GET = do_PUT = do_POST = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(site: FakeAppService) -> Iterator[FakeAppService]:
    httpd = ThreadingHTTPServer(("127.0.0.1", site.port), _handler(site))
    site.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()
