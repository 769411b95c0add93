"""Fetching other servers' media through the real federation client, against hostile
HTTPS servers on loopback: an endless body is cut at the cap (the reading stops, the
connection is dropped, nothing is kept), a compressed answer is refused, a blocked
address is never connected to."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trustme

from pocketserver.config import load_config
from pocketserver.config.model import Config
from pocketserver.errors import MatrixError
from pocketserver.federation.client import FederationClient, federation_ssl_context
from pocketserver.media.multipart import multipart_content_type, write_head, write_tail
from pocketserver.media.remote import RemoteMediaFetcher
from pocketserver.media.repository import MediaRepository
from pocketserver.net.addresses import AddressPolicy
from pocketserver.storage.db import Database
from tests.federation.tls_rig import LOOPBACK_ONLY, no_srv, start_tiny_server, write_cert
from tests.harness import make_config

SERVER_IP = "127.0.0.2"
CAP = 256 * 1024
CHUNK = 64 * 1024


class HostileOrigin:
    """An ASGI app: ``/download/endless`` streams without end (counting what it sent),
    ``/download/gzip`` answers compressed, ``/download/ok`` a proper answer."""

    def __init__(self) -> None:
        self.sent = 0
        self.paths: list[str] = []
        self.accept_encoding: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.paths.append(scope["path"])
        self.accept_encoding.append(headers.get("accept-encoding", ""))
        media_id = scope["path"].rsplit("/", 1)[1]
        ctype = [(b"content-type", multipart_content_type("bnd").encode())]
        body = write_head("bnd", "text/plain", None) + b"hello" + write_tail("bnd")
        if media_id == "ok":
            await send({"type": "http.response.start", "status": 200, "headers": ctype})
            await send({"type": "http.response.body", "body": body})
        elif media_id == "gzip":
            enc = [*ctype, (b"content-encoding", b"gzip")]
            await send({"type": "http.response.start", "status": 200, "headers": enc})
            await send({"type": "http.response.body", "body": gzip.compress(body)})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": ctype})
            head = write_head("bnd", "application/octet-stream", None)
            await send({"type": "http.response.body", "body": head, "more_body": True})
            gone = trio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                # Stops early only when the client goes away.
                while self.sent < 100 * CAP and not gone.is_set():
                    chunk = {"type": "http.response.body", "body": b"\0" * CHUNK, "more_body": True}
                    await send(chunk)
                    self.sent += CHUNK
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(make_config(tmp_path, max_upload_size=CAP))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "m.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


def client(tmp_path: Path, ca: trustme.CA, policy: AddressPolicy) -> FederationClient:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return FederationClient(
        None,
        policy=policy,
        ssl_context=federation_ssl_context(True, [ca_file]),
        srv_lookup=no_srv,
    )


def kept_files(repo: MediaRepository) -> list[Path]:
    return [p for p in repo.store.root.rglob("*") if p.is_file()]


# A read stopped at the cap leaves httpcore's innermost body generator unexhausted
# (see tests/federation/test_client.py test_streaming_size_cap_and_timeout).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_hostile_origins(tmp_path: Path, config: Config, db: Database) -> None:
    ca = trustme.CA()
    cert = write_cert(ca, tmp_path / "srv", SERVER_IP)
    app = HostileOrigin()
    repo = MediaRepository(db, config)
    fed = client(tmp_path, ca, LOOPBACK_ONLY)
    fetcher = RemoteMediaFetcher(repo, fed, config)
    async with trio.open_nursery() as nursery:
        port = await start_tiny_server(nursery, app, SERVER_IP, cert)  # type: ignore[arg-type]
        origin = f"{SERVER_IP}:{port}"

        row = await fetcher.get(origin, "ok", 1000)
        assert repo.served_original(row).path.read_bytes() == b"hello"
        assert app.accept_encoding == ["identity"]

        with pytest.raises(MatrixError) as e:
            await fetcher.get(origin, "endless", 1000)
        assert (e.value.status, e.value.errcode) == (502, "M_TOO_LARGE")
        await trio.sleep(0.5)
        # The server was cut off near the cap, not read to its end.
        assert app.sent < CAP + 2 * 1024 * 1024
        assert await repo.get_remote(origin, "endless") is None

        with pytest.raises(MatrixError) as e:
            await fetcher.get(origin, "gzip", 1000)
        assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN")
        assert await repo.get_remote(origin, "gzip") is None
        assert len(kept_files(repo)) == 1  # only "ok"'s content

        # The same server, with its address blocked by the policy: never connected to.
        blocked = RemoteMediaFetcher(
            repo, client(tmp_path, ca, AddressPolicy(["127.0.0.2/32"], [])), config
        )
        with pytest.raises(MatrixError) as e:
            await blocked.get(origin, "other", 1000)
        assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN")
        assert app.paths.count("/_matrix/federation/v1/media/download/other") == 0
        await fed.aclose()
        nursery.cancel_scope.cancel()
