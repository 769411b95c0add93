"""A throw-away CA (trustme) and tiny HTTPS servers on 127.0.0.x for the federation tests.

Every address here is in 127.0.0.0/8: nothing leaves the machine.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trustme
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from pocketserver.net.addresses import AddressPolicy

LOOPBACK_ONLY = AddressPolicy(["0.0.0.0/0", "::/0"], ["127.0.0.0/8"])
"""Everything blocked but loopback: what the federation tests let through."""

Handler = Callable[[dict[str, Any], bytes], Awaitable[tuple[int, dict[str, str], bytes]]]


def write_cert(ca: trustme.CA, folder: Path, *names: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    with cert_path.open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return cert_path, key_path


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)


async def json_handler(
    answers: dict[str, tuple[int, object]], scope: dict[str, Any], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    status, payload = answers.get(scope["path"], (404, {"errcode": "M_UNRECOGNIZED"}))
    return status, {"content-type": "application/json"}, json.dumps(payload).encode()


class TinyServer:
    """An ASGI app answering through ``handler``, recording what it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen = Seen()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.seen.requests.append(
            {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": headers,
                "body": body,
            }
        )
        self.seen.client_ports.add(scope["client"][1])
        status, out_headers, payload = await self.handler(scope, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def start_tiny_server(
    nursery: trio.Nursery,
    app: TinyServer,
    address: str,
    cert: tuple[Path, Path] | None,
) -> int:
    """Serve ``app`` on ``address`` (a free port), HTTPS with ``cert``; the port."""
    config = HypercornConfig()
    config.bind = [f"{address}:0"]
    config.accesslog = None
    config.errorlog = None
    if cert is not None:
        config.certfile, config.keyfile = str(cert[0]), str(cert[1])
    bound = await nursery.start(partial(hypercorn_serve, app, config, mode="asgi"))
    return int(bound[0].rsplit(":", 1)[1])


def fixed_resolver(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A name resolver from a table; unknown names do not resolve (OSError)."""

    async def resolve(host: str, port: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        if host not in table:
            raise OSError(f"{host}: no such name in the test table")
        return list(table[host])

    return resolve


async def no_srv(name: str) -> list[Any]:
    await trio.lowlevel.checkpoint()
    return []
