"""Media over federation with a real Synapse, both ways (server-server API "Content
Repository", client-server "Content repository").

- Synapse's media through pocketserver: pocketserver fetches it from Synapse's
  ``/_matrix/federation/v1/media/download`` (multipart/mixed), caches it, serves it
  again without asking, and makes thumbnails of it here.
- pocketserver's media through Synapse: Synapse fetches it from our federation media
  endpoint (its own multipart parser reads our answer) and thumbnails it.
- Refusals: unknown media both ways (404), an unsigned request to our federation
  media endpoint (401), a file past our max_upload_size (502 M_TOO_LARGE, nothing
  kept), a server name whose address ip_range_blacklist blocks (502, nothing sent).
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pocketserver.core.crypto import read_signing_keys
from pocketserver.federation.xmatrix import authorization_header
from tests.federation.conftest import federation_url, pocket_tls_config
from tests.federation.synapse_peer import SynapsePeer, TestCA, trusting
from tests.federation.test_synapse_rooms import Client, _pocket_user, _synapse_user
from tests.harness import RunningServer, running_server

Image = pytest.importorskip("PIL.Image")

POCKET_MAX_UPLOAD = 1024 * 1024
AUTHED = "/_matrix/client/v1/media"


@pytest.fixture(scope="module")
def pocket(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[RunningServer]:
    config = pocket_tls_config(
        tmp_path_factory.mktemp("pocket"),
        test_ca,
        max_upload_size=POCKET_MAX_UPLOAD,
        enable_authenticated_media=False,  # to test the legacy endpoints too
    )
    with running_server(config) as server:
        yield server
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]


def png(size: tuple[int, int], colour: str = "teal") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def upload(user: Client, data: bytes, ctype: str, name: str) -> tuple[str, str]:
    r = user.http.post(
        "/_matrix/media/v3/upload",
        content=data,
        headers={"Content-Type": ctype},
        params={"filename": name},
    )
    assert r.status_code == 200, r.text
    server, media_id = r.json()["content_uri"].removeprefix("mxc://").split("/")
    return server, media_id


def get(user: Client, path: str, **params: Any) -> httpx.Response:
    return user.http.get(AUTHED + path, params=params or None, timeout=60.0)


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return tuple(im.size)  # type: ignore[return-value]


def remote_rows(pocket: RunningServer) -> list[tuple[str, str, int]]:
    db = Path(str(pocket.config["database"]["args"]["database"]))  # type: ignore[index]
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute("SELECT origin, media_id, size FROM remote_media"))
    finally:
        conn.close()


def federation_requests(synapse: SynapsePeer, media_id: str) -> int:
    return synapse.log_text().count(f"GET /_matrix/federation/v1/media/download/{media_id}")


def test_synapse_media_through_pocketserver(pocket: RunningServer, synapse: SynapsePeer) -> None:
    alice = _pocket_user(pocket, "alice")
    bob = _synapse_user(synapse, "bob")
    data = png((400, 300))
    server, media_id = upload(bob, data, "image/png", "synapse pic.png")
    assert server == synapse.server_name

    r = get(alice, f"/download/{server}/{media_id}")
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    assert "synapse%20pic.png" in r.headers["content-disposition"]
    assert (server, media_id, len(data)) in remote_rows(pocket)

    # Named download, thumbnails (made here from the cached original): all from the
    # cache, so Synapse was asked once.
    r = get(alice, f"/download/{server}/{media_id}/other.png")
    assert r.content == data
    assert "other.png" in r.headers["content-disposition"]
    r = get(alice, f"/thumbnail/{server}/{media_id}", width=32, height=32, method="crop")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("image/")
    assert image_size(r.content) == (32, 32)
    r = get(alice, f"/thumbnail/{server}/{media_id}", width=320, height=240, method="scale")
    assert image_size(r.content) == (320, 240)
    assert federation_requests(synapse, media_id) == 1, synapse.log_text()[-3000:]

    # Unknown at Synapse: 404 M_NOT_FOUND, nothing cached.
    r = get(alice, f"/download/{server}/doesNotExist123")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
    r = get(alice, f"/thumbnail/{server}/doesNotExist123", width=32, height=32)
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text
    assert all(row[1] != "doesNotExist123" for row in remote_rows(pocket))

    # No token: refused before anything is fetched.
    r = httpx.get(pocket.base_url + f"{AUTHED}/download/{server}/{media_id}")
    assert r.status_code == 401

    # The legacy unauthenticated endpoints (served: enable_authenticated_media is
    # false here): cached media, and allow_remote=false never fetches.
    legacy = pocket.base_url + "/_matrix/media/v3"
    r = httpx.get(f"{legacy}/download/{server}/{media_id}", params={"allow_remote": "false"})
    assert (r.status_code, r.content) == (200, data)
    _, other_id = upload(bob, b"not fetched yet", "text/plain", "t.txt")
    r = httpx.get(f"{legacy}/download/{server}/{other_id}", params={"allow_remote": "false"})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    assert federation_requests(synapse, other_id) == 0
    r = httpx.get(f"{legacy}/download/{server}/{other_id}", timeout=60)
    assert (r.status_code, r.content) == (200, b"not fetched yet")
    assert federation_requests(synapse, other_id) == 1


def test_pocketserver_media_through_synapse(pocket: RunningServer, synapse: SynapsePeer) -> None:
    carol = _pocket_user(pocket, "carol")
    dave = _synapse_user(synapse, "dave")
    data = png((300, 200), "orange")
    server, media_id = upload(carol, data, "image/png", "from the pi.png")
    assert server == pocket.server_name

    r = get(dave, f"/download/{server}/{media_id}")
    assert r.status_code == 200, (r.text, synapse.log_text()[-3000:])
    assert r.content == data
    assert r.headers["content-type"] == "image/png"
    assert "from%20the%20pi.png" in r.headers["content-disposition"]

    # Synapse thumbnails the copy it fetched.
    r = get(dave, f"/thumbnail/{server}/{media_id}", width=32, height=32, method="crop")
    assert r.status_code == 200, r.text
    assert image_size(r.content) == (32, 32)

    # A text file, a type that is served as an attachment.
    text = "héllo from the pi\n".encode() * 1000
    server, text_id = upload(carol, text, "text/csv", "data.csv")
    r = get(dave, f"/download/{server}/{text_id}")
    assert r.content == text
    assert r.headers["content-type"].startswith("text/csv")

    r = get(dave, f"/download/{server}/unknownMediaId")
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text


def _signed_as_synapse(synapse: SynapsePeer, pocket: RunningServer, uri: str) -> dict[str, str]:
    config = yaml.safe_load((synapse.directory / "homeserver.yaml").read_text())
    (key,) = read_signing_keys(Path(config["signing_key_path"]).read_text())
    header = authorization_header(synapse.server_name, pocket.server_name, key, "GET", uri, None)
    return {"Authorization": header}


def _parts(response: httpx.Response) -> list[Any]:
    raw = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(raw + response.content)
    assert message.is_multipart()
    return list(message.iter_parts())


def test_our_federation_media_endpoints(pocket: RunningServer, synapse: SynapsePeer) -> None:
    erin = _pocket_user(pocket, "erin")
    data = png((200, 200), "navy")
    _, media_id = upload(erin, data, "image/png", "e.png")
    base = federation_url(pocket)
    with httpx.Client(base_url=base, verify=trusting(synapse.ca_path), timeout=60) as fed:
        # Unsigned: 401, whatever the media.
        for path in (f"download/{media_id}", f"thumbnail/{media_id}?width=32&height=32"):
            r = fed.get(f"/_matrix/federation/v1/media/{path}")
            assert (r.status_code, r.json()["errcode"]) == (401, "M_UNAUTHORIZED"), r.text

        # Signed by Synapse's key (our keyring fetches it from Synapse).
        uri = f"/_matrix/federation/v1/media/download/{media_id}"
        r = fed.get(uri, headers=_signed_as_synapse(synapse, pocket, uri))
        assert r.status_code == 200, r.text
        assert int(r.headers["content-length"]) == len(r.content)
        meta, part = _parts(r)
        assert meta.get_content_type() == "application/json"
        assert meta.get_payload(decode=True) == b"{}"
        assert part.get_content_type() == "image/png"
        assert part.get_content_disposition() == "inline"
        assert part.get_filename() == "e.png"
        assert part.get_payload(decode=True) == data

        uri = f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=crop"
        r = fed.get(uri, headers=_signed_as_synapse(synapse, pocket, uri))
        assert r.status_code == 200, r.text
        _, part = _parts(r)
        assert image_size(part.get_payload(decode=True)) == (32, 32)

        for uri in (
            "/_matrix/federation/v1/media/download/noSuchMedia",
            "/_matrix/federation/v1/media/thumbnail/noSuchMedia?width=32&height=32",
        ):
            r = fed.get(uri, headers=_signed_as_synapse(synapse, pocket, uri))
            assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND"), r.text


def test_too_large_and_blacklisted_remotes_are_refused(
    pocket: RunningServer, synapse: SynapsePeer
) -> None:
    frank = _pocket_user(pocket, "frank")
    gina = _synapse_user(synapse, "gina")
    big = b"\0" * (POCKET_MAX_UPLOAD + 1)
    server, media_id = upload(gina, big, "application/octet-stream", "big.bin")
    r = get(frank, f"/download/{server}/{media_id}")
    assert (r.status_code, r.json()["errcode"]) == (502, "M_TOO_LARGE"), r.text
    assert all(row[1] != media_id for row in remote_rows(pocket))
    data_dir = Path(str(pocket.config["media_store_path"]))
    assert not any(p.stat().st_size > POCKET_MAX_UPLOAD for p in data_dir.rglob("*") if p.is_file())

    # ::1 is in the default ip_range_blacklist (the test config lets 127.0.0.0/8 through
    # only): refused before any connection.
    r = get(frank, "/download/[::1]:8448/someMedia")
    assert (r.status_code, r.json()["errcode"]) == (502, "M_UNKNOWN"), r.text
    assert "[::1]:8448" not in {row[0] for row in remote_rows(pocket)}
    assert "[::1]:8448: ::1 resolves to an address that is not allowed" in pocket.log_text()
