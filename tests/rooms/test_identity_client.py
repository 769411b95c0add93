"""The identity server client in-process (httpx.MockTransport): what it sends, and the
answers it refuses (too long, malformed, redirects, bad URLs)."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest

from pocketserver.net.addresses import outbound_policy
from pocketserver.net.identity import (
    MAX_RESPONSE_BYTES,
    IdentityClient,
    IdentityServerError,
    IdentityServerRefused,
)

INVITE = {"medium": "email", "address": "a@b.c", "room_id": "!r:hs", "sender": "@s:hs"}
KEY_URL = "https://is.example/_matrix/identity/v2/pubkey/isvalid"


def _client(handler) -> tuple[IdentityClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    transport = httpx.MockTransport(record)
    return IdentityClient(outbound_policy([], []), transport=transport), seen


async def test_lookup_sends_the_sha256_hash_with_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/hash_details"):
            return httpx.Response(200, json={"algorithms": ["sha256"], "lookup_pepper": "pep"})
        body = json.loads(request.content)
        return httpx.Response(200, json={"mappings": {body["addresses"][0]: "@bob:hs"}})

    client, seen = _client(handler)
    assert await client.lookup("is.example:8443", "tok", "email", "a@b.c") == "@bob:hs"
    assert [str(r.url) for r in seen] == [
        "https://is.example:8443/_matrix/identity/v2/hash_details",
        "https://is.example:8443/_matrix/identity/v2/lookup",
    ]
    assert all(r.headers["Authorization"] == "Bearer tok" for r in seen)
    digest = hashlib.sha256(b"a@b.c email pep").digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert json.loads(seen[1].content) == {
        "addresses": [expected],
        "algorithm": "sha256",
        "pepper": "pep",
    }


async def test_lookup_falls_back_to_none_and_refuses_a_bad_user_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/hash_details"):
            return httpx.Response(200, json={"algorithms": ["none"], "lookup_pepper": "pep"})
        assert json.loads(request.content)["addresses"] == ["a@b.c email"]
        return httpx.Response(200, json={"mappings": {"a@b.c email": "not a user"}})

    client, _ = _client(handler)
    with pytest.raises(IdentityServerError):
        await client.lookup("is.example", "tok", "email", "a@b.c")


@pytest.mark.parametrize(
    "answer",
    [
        {"token": "has space", "display_name": "x", "public_keys": []},
        {"token": "t" * 256, "display_name": "x", "public_key": "k"},
        {"token": "ok", "display_name": 5, "public_key": "k"},
        {"token": "ok", "display_name": "x"},  # no key at all
        {"token": "ok", "display_name": "x", "public_keys": [{"public_key": "k"}]},
        {
            "token": "ok",
            "display_name": "x",
            "public_keys": [{"public_key": "k", "key_validity_url": "http://plain/"}],
        },
        {
            "token": "ok",
            "display_name": "x",
            "public_keys": [{"public_key": "k", "key_validity_url": KEY_URL}] * 9,
        },
    ],
)
async def test_store_invite_refuses_malformed_answers(answer: dict) -> None:
    client, _ = _client(lambda r: httpx.Response(200, json=answer))
    with pytest.raises(IdentityServerError):
        await client.store_invite("is.example", "tok", INVITE)


async def test_store_invite_fills_in_the_single_key() -> None:
    answer = {"token": "T0k-._=", "display_name": "a...@b", "public_key": "PK"}
    client, seen = _client(lambda r: httpx.Response(200, json=answer))
    stored = await client.store_invite("is.example", "tok", INVITE)
    assert json.loads(seen[0].content) == INVITE
    assert stored.event_content() == {
        "display_name": "a...@b",
        "public_keys": [{"public_key": "PK", "key_validity_url": KEY_URL}],
        "public_key": "PK",
        "key_validity_url": KEY_URL,
    }


async def test_long_answers_redirects_and_errors_are_refused() -> None:
    big = b'{"valid": true, "pad": "' + b"x" * MAX_RESPONSE_BYTES + b'"}'
    client, _ = _client(lambda r: httpx.Response(200, content=big))
    with pytest.raises(IdentityServerError, match="too long"):
        await client.key_is_valid(KEY_URL, "PK")
    client, seen = _client(lambda r: httpx.Response(302, headers={"Location": "https://x/"}))
    with pytest.raises(IdentityServerRefused):
        await client.key_is_valid(KEY_URL, "PK")
    assert len(seen) == 1  # not followed
    client, _ = _client(lambda r: httpx.Response(200, content=b"[1]"))
    with pytest.raises(IdentityServerError):
        await client.key_is_valid(KEY_URL, "PK")


async def test_key_validity() -> None:
    answers = iter([{"valid": True}, {"valid": "true"}, {}])
    client, seen = _client(lambda r: httpx.Response(200, json=next(answers)))
    assert await client.key_is_valid(KEY_URL + "?x=1", "P+K/") is True
    assert seen[0].url.params["public_key"] == "P+K/"
    assert seen[0].url.params["x"] == "1"
    assert await client.key_is_valid(KEY_URL, "PK") is False
    assert await client.key_is_valid(KEY_URL, "PK") is False
    for url in ("http://is.example/isvalid", "file:///etc/passwd", "https://u@is.example/"):
        with pytest.raises(IdentityServerError):
            await client.key_is_valid(url, "PK")
    assert len(seen) == 3


async def test_a_bad_identity_server_name_sends_nothing() -> None:
    client, seen = _client(lambda r: httpx.Response(200, json={}))
    for name in ("is.example/path", "a@is.example", "", "is.example:99999"):
        with pytest.raises(IdentityServerError):
            await client.lookup(name, "tok", "email", "a@b.c")
    assert seen == []
