"""URL previews in-process: OpenGraph parsing, the stored image, the cache, the SSRF guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketserver.cache import MemoryBudget
from pocketserver.config import load_config
from pocketserver.errors import MatrixError
from pocketserver.media.preview import UrlPreviewer
from pocketserver.media.preview_html import parse_opengraph
from pocketserver.media.repository import MediaRepository
from pocketserver.storage.db import Database
from tests.harness import make_config
from tests.media.fake_web import FakeSite, page, png_bytes, serving

pytest.importorskip("PIL")


@pytest.fixture
def internal() -> Iterator[FakeSite]:
    site = FakeSite("127.0.0.1", {"/": (200, {"Content-Type": "text/html"}, page("secret"))})
    with serving(site):
        yield site


@pytest.fixture
def public(internal: FakeSite) -> Iterator[FakeSite]:
    site = FakeSite("127.0.0.2")
    og = (
        b'<html><head><meta property="og:title" content="OG &amp; title">'
        b'<meta property="og:description" content="Described">'
        b'<meta property="og:image" content="/img.png"><title>ignored</title></head>'
        b"<body></body></html>"
    )
    site.routes = {
        "/og": (200, {"Content-Type": "text/html; charset=utf-8"}, og),
        "/plain": (200, {"Content-Type": "text/html"}, page("Plain page", description="Desc")),
        "/img.png": (200, {"Content-Type": "image/png"}, png_bytes((64, 48))),
        "/inner-image": (
            200,
            {"Content-Type": "text/html"},
            page("t", image=internal.url("/")),
        ),
        "/to-internal": (302, {"Location": internal.url("/")}, b""),
        "/bin": (200, {"Content-Type": "application/zip"}, b"PK"),
    }
    with serving(site):
        yield site


async def resolver(host: str, port: int) -> list[str]:
    return {"good.test": ["127.0.0.2"], "evil.test": ["127.0.0.1"]}[host]


@pytest.fixture
def previewer(tmp_path: Path) -> Iterator[tuple[UrlPreviewer, MediaRepository]]:
    path = make_config(
        tmp_path,
        url_preview_enabled=True,
        url_preview_ip_range_whitelist=["127.0.0.2/32"],
    )
    config = load_config(path)
    db = Database(tmp_path / "media.db", memory_bytes=4 * 1024 * 1024)
    repo = MediaRepository(db, config)
    budget = MemoryBudget(config.memory_budget)
    p = UrlPreviewer(config, repo, budget.cache("url_previews", 0.02), resolver=resolver)
    yield p, repo
    db.close()


async def test_opengraph_page_with_image(
    previewer: tuple[UrlPreviewer, MediaRepository], public: FakeSite
) -> None:
    p, repo = previewer
    result = await p.preview(public.url("/og", host="good.test"), "@a:test.local")
    assert result["og:title"] == "OG & title"
    assert result["og:description"] == "Described"
    assert str(result["og:image"]).startswith("mxc://test.local/")
    assert result["og:image:type"] == "image/png"
    assert result["og:image:width"] == 64
    assert result["og:image:height"] == 48
    assert result["matrix:image:size"] == len(png_bytes((64, 48)))
    media_id = str(result["og:image"]).rsplit("/", 1)[1]
    row = await repo.get_local("test.local", media_id, 0)
    assert repo.served_original(row).path.read_bytes() == png_bytes((64, 48))
    # Cached: the site is not asked again.
    seen = len(public.seen)
    again = await p.preview(public.url("/og", host="good.test"), "@a:test.local")
    assert again == result
    assert len(public.seen) == seen


async def test_title_and_description_fallbacks(
    previewer: tuple[UrlPreviewer, MediaRepository], public: FakeSite
) -> None:
    p, _ = previewer
    result = await p.preview(public.url("/plain"), "@a:test.local")
    assert result["og:title"] == "Plain page"
    assert result["og:description"] == "Desc"
    assert "og:image" not in result


async def test_direct_image_url(
    previewer: tuple[UrlPreviewer, MediaRepository], public: FakeSite
) -> None:
    p, _ = previewer
    result = await p.preview(public.url("/img.png"), "@a:test.local")
    assert str(result["og:image"]).startswith("mxc://")
    assert result["og:image:width"] == 64


async def test_refused_and_failed(
    previewer: tuple[UrlPreviewer, MediaRepository], public: FakeSite, internal: FakeSite
) -> None:
    p, _ = previewer
    for url in (
        internal.url("/"),
        internal.url("/", host="evil.test"),
        public.url("/to-internal"),
        "file:///etc/passwd",
    ):
        with pytest.raises(MatrixError) as e:
            await p.preview(url, "@a:test.local")
        assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN"), url
    for url in (public.url("/bin"), public.url("/missing")):
        with pytest.raises(MatrixError) as e:
            await p.preview(url, "@a:test.local")
        assert (e.value.status, e.value.errcode) == (502, "M_UNKNOWN"), url
    # An og:image pointing inside is dropped; the rest of the preview stays.
    result = await p.preview(public.url("/inner-image"), "@a:test.local")
    assert result["og:title"] == "t"
    assert "og:image" not in result
    assert internal.seen == []


def test_parse_opengraph_is_bounded() -> None:
    huge_title = "x" * 100_000
    body = f"<html><head><title>{huge_title}</title></head><body>".encode() + b"<p>y" * 100_000
    og = parse_opengraph(body)
    assert len(str(og["og:title"])) == 1000
    many = "".join(f'<meta property="og:k{i}" content="v">' for i in range(500)).encode()
    assert len(parse_opengraph(b"<head>" + many)) == 50


def test_parse_opengraph_charset() -> None:
    body = "<title>caf\u00e9</title>".encode("latin-1")
    assert parse_opengraph(body, "text/html; charset=iso-8859-1")["og:title"] == "caf\u00e9"
    assert parse_opengraph(body, "text/html; charset=bogus")["og:title"] == "caf\ufffd"
