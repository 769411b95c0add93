"""Routing on the raw path, in process: what Werkzeug matches, and what views get."""

from __future__ import annotations

import httpx
import pytest

from pocketserver.api import rawpath
from pocketserver.app import PocketApp


@pytest.mark.parametrize(
    ("raw", "routed"),
    [
        (b"/a/b", "/a/b"),
        (b"/a%2Fb", "/a%2Fb"),
        (b"/a%2fb", "/a%2Fb"),  # kept escapes are normalised
        (b"/%61/%21room%3Aexample.org", "/a/!room:example.org"),
        (b"/x%252F", "/x%252F"),  # a literal "%2F" stays distinguishable from "/"
        (b"/caf%C3%A9%2F", "/caf\u00e9%2F"),
        (b"/50%zz", "/50%zz"),  # not an escape: left alone
    ],
)
def test_routing_path(raw: bytes, routed: str) -> None:
    assert rawpath.routing_path({"raw_path": raw, "path": "ignored"}) == routed


def test_routing_path_without_raw_path() -> None:
    assert rawpath.routing_path({"path": "/a/100%"}) == "/a/100%25"


@pytest.mark.parametrize(
    ("segment", "value"),
    [("a%2Fb", "a/b"), ("x%252F", "x%2F"), ("%25%25", "%%"), ("plain", "plain")],
)
def test_decode_segment(segment: str, value: str) -> None:
    assert rawpath.decode_segment(segment) == value


async def test_views_get_decoded_segments() -> None:
    app = PocketApp("t")
    rawpath.install(app.url_map)

    @app.route("/one/<a>/<b>")
    async def one(a: str, b: str) -> dict[str, str]:
        return {"a": a, "b": b}

    @app.route("/rest/<x>/<path:rest>")
    async def rest(x: str, rest: str) -> dict[str, str]:
        return {"x": x, "rest": rest}

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/one/a%2Fb/c")).json() == {"a": "a/b", "b": "c"}
        assert (await c.get("/one/a/b/c")).status_code == 404
        assert (await c.get("/one/%2F%2F/x%252F")).json() == {"a": "//", "b": "x%2F"}
        r = await c.get("/rest/a%2Fb/c/d%2Fe")
        assert r.json() == {"x": "a/b", "rest": "c/d/e"}


async def test_url_building_still_works_compiled_on_first_use() -> None:
    """Rules' URL builders are compiled lazily (issue #15: 0.2 s of every start)."""
    app = PocketApp("t")
    rawpath.install(app.url_map)

    @app.route("/room/<room_id>/<path:rest>")
    async def room(room_id: str, rest: str) -> dict[str, str]:
        return {}

    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == "room")
    assert isinstance(rule, rawpath.LazyBuildRule)
    adapter = app.url_map.bind("t")
    assert adapter.build("room", {"room_id": "!a:b", "rest": "x/y"}) == "/room/!a:b/x/y"
    assert adapter.build("room", {"room_id": "c", "rest": "d", "q": "1"}) == "/room/c/d?q=1"
    # The app still routes on the same rules.
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/room/a/b/c")).status_code == 200
