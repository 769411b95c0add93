"""Tiny HTTP servers on loopback addresses for the URL preview tests (threads)."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, "orange").save(buf, "PNG")
    return buf.getvalue()


@dataclass
class FakeSite:
    """Answers ``routes[path] = (status, headers, body)``; records (path, Host) seen."""

    host: str
    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"


def _handler(site: FakeSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.seen.append((self.path, self.headers.get("Host", "")))
            status, headers, body = site.routes.get(
                self.path, (404, {"Content-Type": "text/plain"}, b"no such page")
            )
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # a push gateway: the body is read and dropped
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving(site: FakeSite) -> Iterator[FakeSite]:
    httpd = ThreadingHTTPServer((site.host, 0), _handler(site))
    site.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()


def page(title: str, image: str | None = None, description: str = "A page") -> bytes:
    img = f'<meta property="og:image" content="{image}">' if image else ""
    return (
        f"<html><head><title>{title}</title>"
        f'<meta name="description" content="{description}">{img}'
        f"</head><body><p>hello</p></body></html>"
    ).encode()
