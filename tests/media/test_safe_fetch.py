"""The SSRF guard of URL previews: blacklisted addresses are unreachable every way round."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pocketserver.config.media import UrlPattern
from pocketserver.media.safe_fetch import (
    AddressPolicy,
    FetchFailed,
    FetchRefused,
    SafeFetcher,
    read_capped,
    url_blacklisted,
)
from tests.media.fake_web import FakeSite, page, serving

BLACKLIST = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fe80::/10"]


@pytest.fixture
def internal() -> Iterator[FakeSite]:
    """A service on 127.0.0.1 that previews must never reach."""
    site = FakeSite("127.0.0.1", {"/": (200, {"Content-Type": "text/html"}, page("secret"))})
    with serving(site):
        yield site


@pytest.fixture
def public(internal: FakeSite) -> Iterator[FakeSite]:
    """An "internet" site on 127.0.0.2 (whitelisted in these tests)."""
    site = FakeSite("127.0.0.2")
    site.routes = {
        "/page": (200, {"Content-Type": "text/html"}, page("public")),
        "/to-internal": (302, {"Location": internal.url("/")}, b""),
        "/to-evil-name": (302, {"Location": internal.url("/", host="evil.test")}, b""),
        "/to-page": (301, {"Location": "/page"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/error": (500, {"Content-Type": "text/plain"}, b"oops"),
    }
    with serving(site):
        yield site


RESOLVE = {
    "good.test": ["127.0.0.2"],
    "evil.test": ["127.0.0.1"],
    "mixed.test": ["127.0.0.2", "127.0.0.1"],
    "v6.test": ["::1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    if host not in RESOLVE:
        raise OSError("no such host")
    return RESOLVE[host]


def fetcher(whitelist: list[str] | None = None, **kwargs: object) -> SafeFetcher:
    policy = AddressPolicy(BLACKLIST, ["127.0.0.2/32"] if whitelist is None else whitelist)
    return SafeFetcher(policy, (), resolver=kwargs.pop("resolver", fake_resolver), **kwargs)  # type: ignore[arg-type]


async def body_of(url: str, ctype: str, chunks: AsyncIterator[bytes]) -> tuple[str, bytes]:
    return url, await read_capped(chunks, 1_000_000)


async def test_allowed_site_is_fetched(public: FakeSite) -> None:
    url, body = await fetcher().fetch(public.url("/page"), body_of)
    assert b"<title>public</title>" in body
    assert url == public.url("/page")


async def test_internal_address_directly(internal: FakeSite) -> None:
    with pytest.raises(FetchRefused):
        await fetcher().fetch(internal.url("/"), body_of)
    with pytest.raises(FetchRefused):
        await fetcher().fetch(f"http://[::1]:{internal.port}/", body_of)
    with pytest.raises(FetchRefused):
        await fetcher().fetch(f"http://[::ffff:127.0.0.1]:{internal.port}/", body_of)
    assert internal.seen == []


async def test_redirect_to_internal_address(public: FakeSite, internal: FakeSite) -> None:
    for path in ("/to-internal", "/to-evil-name"):
        with pytest.raises(FetchRefused):
            await fetcher().fetch(public.url(path), body_of)
    assert [p for p, _ in public.seen] == ["/to-internal", "/to-evil-name"]
    assert internal.seen == []


async def test_relative_redirect_is_followed(public: FakeSite) -> None:
    url, body = await fetcher().fetch(public.url("/to-page"), body_of)
    assert url == public.url("/page")
    assert b"public" in body


async def test_name_resolving_to_internal_address(internal: FakeSite) -> None:
    for host in ("evil.test", "mixed.test", "v6.test"):
        with pytest.raises(FetchRefused):
            await fetcher().fetch(internal.url("/", host=host), body_of)
    assert internal.seen == []


async def test_connection_goes_to_the_checked_address(public: FakeSite, internal: FakeSite) -> None:
    """DNS rebinding: a second answer pointing inside is never used for the connection."""
    answers = [["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    _, body = await fetcher(resolver=rebinding).fetch(
        public.url("/page", host="rebind.test"), body_of
    )
    assert b"public" in body
    assert public.seen == [("/page", f"rebind.test:{public.port}")]
    assert internal.seen == []


async def test_whitelist_opens_an_address(internal: FakeSite) -> None:
    _, body = await fetcher(whitelist=["127.0.0.1/32"]).fetch(internal.url("/"), body_of)
    assert b"secret" in body


async def test_schemes_and_failures(public: FakeSite) -> None:
    for url in ("file:///etc/passwd", "ftp://127.0.0.2/", "gopher://x/", "http:///nohost"):
        with pytest.raises(FetchRefused):
            await fetcher().fetch(url, body_of)
    with pytest.raises(FetchFailed):
        await fetcher().fetch(public.url("/loop"), body_of)
    with pytest.raises(FetchFailed):
        await fetcher().fetch(public.url("/error"), body_of)
    with pytest.raises(FetchFailed):
        await fetcher().fetch("http://unknown.test/", body_of)
    with pytest.raises(FetchFailed):
        await fetcher().fetch("http://127.0.0.2:1/", body_of)


async def test_timeout(autojump_clock: object) -> None:
    async def slow(host: str, port: int) -> list[str]:
        import trio

        await trio.sleep(100)
        return ["127.0.0.2"]

    with pytest.raises(FetchFailed, match="timed out"):
        await fetcher(resolver=slow).fetch("http://slow.test/", body_of)


def test_address_policy_edge_cases() -> None:
    policy = AddressPolicy(BLACKLIST, ["10.1.0.0/16"])
    assert not policy.allowed("127.0.0.1")
    assert not policy.allowed("::ffff:127.0.0.1")
    assert not policy.allowed("fe80::1%eth0")
    assert not policy.allowed("not an address")
    assert not policy.allowed("10.2.3.4")
    assert policy.allowed("10.1.2.3")
    assert policy.allowed("93.184.216.34")
    assert policy.allowed("2606:2800:220:1::1")


def test_url_blacklist_patterns() -> None:
    patterns = (
        UrlPattern((("netloc", "*.example.com"),)),
        UrlPattern((("scheme", "http"), ("netloc", "plain.org"))),
        UrlPattern((("netloc", "^sub[0-9]+\\.regex\\.net$"),)),
        UrlPattern((("path", "/private/*"),)),
    )
    assert url_blacklisted("https://a.example.com/x", patterns)
    assert not url_blacklisted("https://example.com/x", patterns)
    assert url_blacklisted("http://plain.org/", patterns)
    assert not url_blacklisted("https://plain.org/", patterns)
    assert url_blacklisted("https://sub12.regex.net/", patterns)
    assert not url_blacklisted("https://subx.regex.net/", patterns)
    assert url_blacklisted("https://any.host/private/page", patterns)


async def test_url_blacklist_refuses(public: FakeSite) -> None:
    f = SafeFetcher(
        AddressPolicy(BLACKLIST, ["127.0.0.2/32"]),
        (UrlPattern((("path", "/page"),)),),
        resolver=fake_resolver,
    )
    with pytest.raises(FetchRefused):
        await f.fetch(public.url("/page"), body_of)
    # A redirect to a blacklisted URL is refused too.
    with pytest.raises(FetchRefused):
        await f.fetch(public.url("/to-page"), body_of)
