"""The content repository through the real server: uploads, downloads, thumbnails, headers."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import RunningServer, make_config, running_server

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

MAX_UPLOAD = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("media"),
        max_upload_size=MAX_UPLOAD,
        max_image_pixels="10M",
        max_pending_media_uploads=3,
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


def _auth(server: RunningServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.register(user)['access_token']}"}


def _upload(
    c: httpx.Client,
    h: dict[str, str],
    data: bytes,
    ctype: str = "application/octet-stream",
    filename: str | None = None,
) -> str:
    params = {"filename": filename} if filename else {}
    r = c.post(
        "/_matrix/media/v3/upload",
        content=data,
        params=params,
        headers={**h, "Content-Type": ctype},
    )
    assert r.status_code == 200, r.text
    uri = r.json()["content_uri"]
    assert uri.startswith("mxc://test.local/")
    return str(uri.rsplit("/", 1)[1])


def _stored_files(server: RunningServer) -> list[Path]:
    root = server.config_path.parent / "data" / "media_store"
    return sorted(p for p in root.rglob("*") if p.is_file())


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    im = Image.new(mode, size)
    for x in range(0, size[0], 7):
        for y in range(0, size[1], 13):
            im.putpixel((x, y), (x % 256, y % 256, 128) if mode == "RGB" else 1)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("size", [1024, 5 * 1024 * 1024, MAX_UPLOAD])
def test_upload_download_byte_identical(server: RunningServer, new_user: str, size: int) -> None:
    h = _auth(server, new_user)
    data = os.urandom(size)
    with server.client() as c:
        media_id = _upload(c, h, data, filename="data.bin")
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["Content-Length"] == str(size)
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"] == "attachment; filename=data.bin"


def test_chunked_upload_without_length(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    parts = [os.urandom(100_000) for _ in range(20)]
    with server.client() as c:
        r = c.post("/_matrix/media/v3/upload", content=iter(parts), headers=h)
        assert r.status_code == 200, r.text
        media_id = r.json()["content_uri"].rsplit("/", 1)[1]
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
        assert r.content == b"".join(parts)


def test_identical_uploads_are_stored_once(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    data = os.urandom(4096)
    with server.client() as c:
        before = len(_stored_files(server))
        a = _upload(c, h, data)
        b = _upload(c, h, data)
        assert a != b
        assert len(_stored_files(server)) == before + 1
        for media_id in (a, b):
            r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
            assert r.content == data


def test_too_large_upload_is_refused_and_nothing_kept(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    before = _stored_files(server)
    with server.client() as c:
        r = c.post("/_matrix/media/v3/upload", content=os.urandom(MAX_UPLOAD + 1), headers=h)
        assert r.status_code == 413
        assert r.json()["errcode"] == "M_TOO_LARGE"
        # Without Content-Length the limit is enforced while reading.
        chunks = [os.urandom(1024 * 1024)] * 6 + [b"x"]
        r = c.post("/_matrix/media/v3/upload", content=iter(chunks), headers=h)
        assert r.status_code == 413
        assert r.json()["errcode"] == "M_TOO_LARGE"
    assert _stored_files(server) == before


def test_config_and_auth_required(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        r = c.get("/_matrix/client/v1/media/config", headers=h)
        assert r.status_code == 200
        assert r.json() == {"m.upload.size": MAX_UPLOAD}
        media_id = _upload(c, h, b"hello")
        for path in (
            "/_matrix/client/v1/media/config",
            f"/_matrix/client/v1/media/download/test.local/{media_id}",
            f"/_matrix/client/v1/media/download/test.local/{media_id}/x.txt",
            f"/_matrix/client/v1/media/thumbnail/test.local/{media_id}?width=32&height=32",
            "/_matrix/client/v1/media/preview_url?url=http://example.com/",
        ):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["errcode"] == "M_MISSING_TOKEN"
            r = c.get(path, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401, path
            assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        r = c.post("/_matrix/media/v3/upload", content=b"x" * 1000)
        assert r.status_code == 401
        r = c.post("/_matrix/media/v1/create")
        assert r.status_code == 401
        # The connection is still usable after an early answer.
        assert c.get("/_matrix/client/v1/media/config", headers=h).status_code == 200


def test_legacy_endpoints_are_off_by_default(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        media_id = _upload(c, h, b"legacy")
        for prefix in ("/_matrix/media/v3", "/_matrix/media/r0"):
            for path in (
                f"/download/test.local/{media_id}",
                f"/download/test.local/{media_id}/a.txt",
                f"/thumbnail/test.local/{media_id}?width=32&height=32",
            ):
                r = c.get(prefix + path, headers=h)
                assert r.status_code == 404, path
                assert r.json()["errcode"] == "M_NOT_FOUND"
            # As in Synapse, config and preview_url (which need a token) stay served.
            r = c.get(f"{prefix}/config", headers=h)
            assert r.status_code == 200, r.text
            assert r.json() == {"m.upload.size": MAX_UPLOAD}
            assert c.get(f"{prefix}/config").status_code == 401
            r = c.get(f"{prefix}/preview_url", params={"url": "http://x/"})
            assert r.status_code == 401
            r = c.get(f"{prefix}/preview_url", params={"url": "http://x/"}, headers=h)
            assert r.status_code == 404  # previews are off on this server
            assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_headers_inline_and_attachment(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    png = _image("PNG", (10, 10))
    with server.client() as c:
        safe = _upload(c, h, png, "image/png", "pic.png")
        html = _upload(c, h, b"<script>alert(1)</script>", "text/html", "x.html")
        plain = _upload(c, h, b"text", "text/plain; charset=utf-8", 'na\u00efve "q".txt')
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{safe}", headers=h)
        assert r.headers["Content-Disposition"] == "inline; filename=pic.png"
        assert r.headers["Content-Type"] == "image/png"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        csp = r.headers["Content-Security-Policy"]
        assert csp.startswith("sandbox; default-src 'none'; script-src 'none';")
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{html}", headers=h)
        assert r.headers["Content-Disposition"] == "attachment; filename=x.html"
        assert r.headers["Content-Security-Policy"] == csp
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{plain}", headers=h)
        assert r.headers["Content-Disposition"] == (
            "inline; filename*=utf-8''na%C3%AFve%20%22q%22.txt"
        )
        # A file name in the path replaces the uploaded one.
        r = c.get(
            f"/_matrix/client/v1/media/download/test.local/{html}/other%20name.html", headers=h
        )
        assert r.headers["Content-Disposition"] == "attachment; filename*=utf-8''other%20name.html"
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{safe}", headers=h)
        assert r.content == png


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/v1/media/download/test.local/..",
        "/_matrix/client/v1/media/download/test.local/..%2F..%2Fhomeserver.yaml",
        "/_matrix/client/v1/media/download/test.local/%2e%2e",
        "/_matrix/client/v1/media/download/test.local/a.b",
        "/_matrix/client/v1/media/download/..%2F../abc",
        "/_matrix/client/v1/media/download/test.local/abc%00",
        "/_matrix/client/v1/media/download/test.local/" + "a" * 300,
        "/_matrix/client/v1/media/thumbnail/test.local/..%2Fdata?width=1&height=1",
        # Other servers' media is fetched over federation (tests/federation/
        # test_synapse_media.py); a name or ID that cannot be valid is never asked for.
        "/_matrix/client/v1/media/download/not_a_server!/abcdef",
        "/_matrix/client/v1/media/download/other.server/a.b",
        "/_matrix/client/v1/media/thumbnail/other.server/..%2Fx?width=1&height=1",
        "/_matrix/client/v1/media/download/test.local/doesnotexist",
    ],
)
def test_bad_media_ids_are_not_found(server: RunningServer, new_user: str, path: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        r = c.get(path, headers=h)
    assert r.status_code == 404, r.text
    assert r.json()["errcode"] in ("M_NOT_FOUND", "M_UNRECOGNIZED")


def test_async_upload_flow(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    other = _auth(server, new_user + "b")
    with server.client() as c:
        r = c.post("/_matrix/media/v1/create", headers=h)
        assert r.status_code == 200
        body = r.json()
        assert body["unused_expires_at"] > time.time() * 1000
        media_id = body["content_uri"].rsplit("/", 1)[1]
        url = f"/_matrix/client/v1/media/download/test.local/{media_id}"
        r = c.get(url, params={"timeout_ms": 200}, headers=h)
        assert r.status_code == 504
        assert r.json()["errcode"] == "M_NOT_YET_UPLOADED"
        r = c.get(
            f"/_matrix/client/v1/media/thumbnail/test.local/{media_id}",
            params={"timeout_ms": 0, "width": 32, "height": 32},
            headers=h,
        )
        assert r.json()["errcode"] == "M_NOT_YET_UPLOADED"
        # Someone else may not upload to it.
        put = f"/_matrix/media/v3/upload/test.local/{media_id}"
        r = c.put(put, content=b"nope", headers=other)
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # A download that waits is answered when the upload arrives.
        result: dict[str, httpx.Response] = {}

        def wait() -> None:
            with server.client() as c2:
                result["r"] = c2.get(url, params={"timeout_ms": 10_000}, headers=h)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        data = os.urandom(50_000)
        r = c.put(put, content=data, headers={**h, "Content-Type": "application/x-test"})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        waiter.join(15)
        assert result["r"].status_code == 200
        assert result["r"].content == data
        assert result["r"].headers["Content-Type"] == "application/x-test"
        r = c.put(put, content=b"again", headers=h)
        assert r.status_code == 409
        assert r.json()["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
        for bad in ("test.local/unknownid", "other.server/" + media_id, "test.local/a.b"):
            r = c.put(f"/_matrix/media/v3/upload/{bad}", content=b"x", headers=h)
            assert r.status_code == 404, bad
            assert r.json()["errcode"] == "M_NOT_FOUND"


def test_pending_uploads_are_limited(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        for _ in range(3):
            assert c.post("/_matrix/media/v1/create", headers=h).status_code == 200
        r = c.post("/_matrix/media/v1/create", headers=h)
        assert r.status_code == 429
        assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
        # Another user has their own allowance.
        other = _auth(server, new_user + "x")
        assert c.post("/_matrix/media/v1/create", headers=other).status_code == 200


def _thumb(c: httpx.Client, h: dict[str, str], media_id: str, **params: object) -> httpx.Response:
    return c.get(
        f"/_matrix/client/v1/media/thumbnail/test.local/{media_id}", params=params, headers=h
    )


def test_thumbnails_png_and_jpeg(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    png = _image("PNG", (1000, 800))
    jpeg = _image("JPEG", (1200, 900))
    with server.client() as c:
        png_id = _upload(c, h, png, "image/png")
        jpeg_id = _upload(c, h, jpeg, "image/jpeg")
        cases = [
            (png_id, 32, 32, "crop", "image/png", (32, 32)),
            (png_id, 96, 96, "crop", "image/png", (96, 96)),
            (png_id, 320, 240, "scale", "image/png", (300, 240)),
            (jpeg_id, 32, 32, "crop", "image/jpeg", (32, 32)),
            (jpeg_id, 640, 480, "scale", "image/jpeg", (640, 480)),
            (jpeg_id, 700, 500, "scale", "image/jpeg", (800, 600)),
            (jpeg_id, 50, 40, "scale", "image/jpeg", (320, 240)),
        ]
        for media_id, w, hh, method, ctype, expected in cases:
            r = _thumb(c, h, media_id, width=w, height=hh, method=method)
            assert r.status_code == 200, r.text
            assert r.headers["Content-Type"] == ctype
            assert r.headers["Content-Disposition"].startswith("inline")
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            im = Image.open(io.BytesIO(r.content))
            assert im.size == expected, (w, hh, method)
            assert im.width >= w or im.height >= hh
        # Larger than any thumbnail: the original (never upscaled).
        r = _thumb(c, h, jpeg_id, width=1000, height=1000)
        assert r.content == jpeg
        # An image smaller than asked for: the original.
        small = _image("PNG", (20, 20))
        small_id = _upload(c, h, small, "image/png")
        assert _thumb(c, h, small_id, width=32, height=32, method="crop").content == small


def test_thumbnail_errors(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        png_id = _upload(c, h, _image("PNG", (100, 100)), "image/png")
        text_id = _upload(c, h, b"not an image", "text/plain")
        fake_id = _upload(c, h, b"not a png at all", "image/png")
        for params, errcode in [
            ({"height": 32}, "M_MISSING_PARAM"),
            ({"width": 32}, "M_MISSING_PARAM"),
            ({"width": "x", "height": 32}, "M_INVALID_PARAM"),
            ({"width": -1, "height": 32}, "M_INVALID_PARAM"),
            ({"width": 0, "height": 32}, "M_INVALID_PARAM"),
            ({"width": 32, "height": 32, "method": "stretch"}, "M_INVALID_PARAM"),
            ({"width": 32, "height": 32, "animated": "maybe"}, "M_INVALID_PARAM"),
        ]:
            r = _thumb(c, h, png_id, **params)
            assert r.status_code == 400, params
            assert r.json()["errcode"] == errcode
        for media_id in (text_id, fake_id):
            r = _thumb(c, h, media_id, width=32, height=32)
            assert r.status_code == 400
            assert r.json()["errcode"] == "M_UNKNOWN"


def test_decompression_bomb_is_refused(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    im = Image.new("1", (9000, 9000))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    bomb = buf.getvalue()
    assert len(bomb) < 100_000
    with server.client() as c:
        media_id = _upload(c, h, bomb, "image/png")
        r = _thumb(c, h, media_id, width=32, height=32)
        assert r.status_code == 413
        assert r.json()["errcode"] == "M_TOO_LARGE"
        # The file itself can still be downloaded.
        r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
        assert r.content == bomb


def test_animated_gif(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    frames = [Image.new("RGB", (200, 200), color) for color in ("red", "blue", "green")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    gif = buf.getvalue()
    with server.client() as c:
        media_id = _upload(c, h, gif, "image/gif")
        r = _thumb(c, h, media_id, width=96, height=96, method="crop")
        assert r.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (96, 96)
        r = _thumb(c, h, media_id, width=96, height=96, method="crop", animated="true")
        assert r.headers["Content-Type"] == "image/gif"
        assert r.content == gif


def test_legacy_endpoints_when_enabled(tmp_path: Path) -> None:
    config = make_config(tmp_path, enable_authenticated_media=False)
    with running_server(config) as s:
        h = {"Authorization": f"Bearer {s.register('alice')['access_token']}"}
        with s.client() as c:
            media_id = _upload(c, h, b"old clients", "text/plain")
            for prefix in ("/_matrix/media/v3", "/_matrix/media/r0"):
                r = c.get(f"{prefix}/download/test.local/{media_id}")
                assert r.status_code == 200
                assert r.content == b"old clients"
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                r = c.get(f"{prefix}/download/test.local/{media_id}/n.txt")
                assert r.headers["Content-Disposition"] == "inline; filename=n.txt"
                r = c.get(f"{prefix}/config")
                assert r.status_code == 401
                r = c.get(f"{prefix}/config", headers=h)
                assert r.json()["m.upload.size"] == 50 * 1024 * 1024
                r = c.get(f"{prefix}/preview_url", params={"url": "http://x/"}, headers=h)
                assert r.status_code == 404
                assert r.json()["errcode"] == "M_UNRECOGNIZED"
    assert "Traceback" not in s.log_text()


def test_url_previews_through_the_server(tmp_path: Path) -> None:
    from tests.media.fake_web import FakeSite, page, png_bytes, serving

    internal = FakeSite("127.0.0.1", {"/": (200, {"Content-Type": "text/html"}, page("secret"))})
    public = FakeSite("127.0.0.2")
    config = make_config(
        tmp_path, url_preview_enabled=True, url_preview_ip_range_whitelist=["127.0.0.2/32"]
    )
    with serving(internal), serving(public), running_server(config) as s:
        public.routes = {
            "/page": (200, {"Content-Type": "text/html"}, page("Hello", image="/i.png")),
            "/i.png": (200, {"Content-Type": "image/png"}, png_bytes((30, 20))),
            "/to-internal": (302, {"Location": internal.url("/")}, b""),
        }
        h = {"Authorization": f"Bearer {s.register('alice')['access_token']}"}
        with s.client() as c:
            r = c.get(
                "/_matrix/client/v1/media/preview_url",
                params={"url": public.url("/page"), "ts": 0},
                headers=h,
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["og:title"] == "Hello"
            assert body["matrix:image:size"] == len(png_bytes((30, 20)))
            # The legacy route still previews with authenticated media on.
            r = c.get(
                "/_matrix/media/v3/preview_url",
                params={"url": public.url("/page")},
                headers=h,
            )
            assert r.status_code == 200, r.text
            assert r.json()["og:title"] == "Hello"
            media_id = body["og:image"].rsplit("/", 1)[1]
            r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
            assert r.content == png_bytes((30, 20))
            for url in (internal.url("/"), public.url("/to-internal"), "file:///etc/passwd"):
                r = c.get("/_matrix/client/v1/media/preview_url", params={"url": url}, headers=h)
                assert r.status_code == 403, url
                assert r.json()["errcode"] == "M_FORBIDDEN"
            r = c.get("/_matrix/client/v1/media/preview_url", headers=h)
            assert r.status_code == 400
            assert r.json()["errcode"] == "M_MISSING_PARAM"
    assert internal.seen == []
    assert "Traceback" not in s.log_text()


def test_url_previews_off_by_default(server: RunningServer, new_user: str) -> None:
    h = _auth(server, new_user)
    with server.client() as c:
        r = c.get("/_matrix/client/v1/media/preview_url", params={"url": "http://x/"}, headers=h)
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_upload_quota_per_user(tmp_path: Path) -> None:
    quota = 256 * 1024
    config = make_config(tmp_path, media_upload_quota_per_user="256K")
    with running_server(config) as s:
        h = {"Authorization": f"Bearer {s.register('alice')['access_token']}"}
        other = {"Authorization": f"Bearer {s.register('bob')['access_token']}"}
        with s.client() as c:

            def refused(r: httpx.Response) -> None:
                assert r.status_code == 403, r.text
                assert r.json()["errcode"] == "M_FORBIDDEN"
                assert "quota" in r.json()["error"]

            _upload(c, h, os.urandom(200 * 1024))
            before = _stored_files(s)
            # Refused before reading (Content-Length), a 1 MB body too: the client
            # gets the 403, not a reset connection.
            refused(c.post("/_matrix/media/v3/upload", content=os.urandom(100 * 1024), headers=h))
            refused(c.post("/_matrix/media/v3/upload", content=os.urandom(1 << 20), headers=h))
            # Without Content-Length: refused while reading.
            parts = [os.urandom(16 * 1024) for _ in range(8)]
            refused(c.post("/_matrix/media/v3/upload", content=iter(parts), headers=h))
            # The async upload endpoint too; the reservation stays usable.
            r = c.post("/_matrix/media/v1/create", headers=h)
            media_id = r.json()["content_uri"].rsplit("/", 1)[1]
            put = f"/_matrix/media/v3/upload/test.local/{media_id}"
            refused(c.put(put, content=os.urandom(100 * 1024), headers=h))
            refused(c.put(put, content=iter(parts), headers=h))
            assert _stored_files(s) == before  # nothing of the refused uploads was kept
            rest = os.urandom(quota - 200 * 1024)
            assert c.put(put, content=rest, headers=h).status_code == 200
            r = c.get(f"/_matrix/client/v1/media/download/test.local/{media_id}", headers=h)
            assert r.content == rest
            # Full: even one byte is refused; another user has their own quota.
            refused(c.post("/_matrix/media/v3/upload", content=b"x", headers=h))
            _upload(c, other, os.urandom(quota))
    assert "Traceback" not in s.log_text()
