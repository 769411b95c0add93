"""A small client of the Identity Service API v2, for third-party invites.

Spec: identity-service-api.md: "Association lookup" (``GET /hash_details``,
``POST /lookup``), "Invitation storage" (``POST /store-invite``) and "Key
management" (``GET /pubkey/isvalid``, called through the ``key_validity_url`` an
invite names). The identity server is the ``id_server`` a client names
(``host[:port]``), always over HTTPS, as Synapse does.

Every connection goes through :func:`pocketserver.net.transport.guarded_transport`:
the host must resolve only to addresses ``ip_range_blacklist`` /
``ip_range_whitelist`` allow, and the connection goes to a checked address. Redirects
are not followed, each request has a deadline and at most
:data:`MAX_RESPONSE_BYTES` of an answer is read. One short-lived client per
operation: nothing is pooled or cached between invites, and httpx is imported only
when a third-party invite is made. Certificates are verified against the system's
trust (or ``SSL_CERT_FILE``) unless ``use_insecure_ssl_client_just_for_testing_do_not_use``
is set (Synapse's key; SyTest's identity server has a self-signed certificate).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import trio

from pocketserver.core.crypto import encode_base64
from pocketserver.core.identifiers import is_valid_server_name, is_valid_user_id
from pocketserver.net.addresses import AddressBlocked, AddressPolicy, Resolver, system_resolver

if TYPE_CHECKING:
    import httpx

TIMEOUT_S = 10.0
"""Connect/read/write timeout of one request; a whole request gets twice that."""

MAX_RESPONSE_BYTES = 64 * 1024
"""Identity server answers are small JSON objects; a longer one is refused."""

MAX_PUBLIC_KEYS = 8
"""More keys than this in a store-invite answer is refused (spec: two)."""

MAX_CONCURRENT = 4
"""Identity server requests in flight at once, server-wide."""

_TOKEN = re.compile(r"[0-9a-zA-Z.=_-]{1,255}")
"""store-invite ``token``: "the characters ``[0-9a-zA-Z.=_-]``", at most 255 of them."""


class IdentityServerError(Exception):
    """The identity server could not be reached, or its answer was unusable."""


class IdentityServerRefused(Exception):
    """The identity server answered with an error status (e.g. a bad access token)."""

    def __init__(self, status: int, errcode: str | None) -> None:
        super().__init__(f"identity server answered HTTP {status} {errcode or ''}".strip())
        self.status = status
        self.errcode = errcode


@dataclass(frozen=True, slots=True)
class PublicKey:
    public_key: str
    key_validity_url: str


@dataclass(frozen=True, slots=True)
class StoredInvite:
    """What ``/store-invite`` answered: what the ``m.room.third_party_invite`` holds."""

    token: str
    display_name: str
    public_keys: tuple[PublicKey, ...]
    fallback: PublicKey
    """The single ``public_key``/``key_validity_url`` older servers read."""

    def event_content(self) -> dict[str, object]:
        """``m.room.third_party_invite`` content (with the backwards-compatible pair,
        as Synapse sends)."""
        return {
            "display_name": self.display_name,
            "public_keys": [
                {"public_key": k.public_key, "key_validity_url": k.key_validity_url}
                for k in self.public_keys
            ],
            "public_key": self.fallback.public_key,
            "key_validity_url": self.fallback.key_validity_url,
        }


def is_https_url(url: str) -> bool:
    """Whether ``url`` is an absolute ``https://`` URL with a host (no credentials)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc


def lookup_hash(address: str, medium: str, pepper: str) -> str:
    """identity-service-api.md "Hashing": sha256 of ``"<address> <medium> <pepper>"``,
    URL-safe unpadded base64."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return encode_base64(digest, urlsafe=True)


class IdentityClient:
    """Talks to identity servers that clients name; see the module docstring."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = TIMEOUT_S,
        verify_tls: bool = True,
    ) -> None:
        self.policy = policy
        """Which identity server addresses are allowed (``transport``, a test double,
        bypasses it)."""
        self._resolver = resolver
        self._transport = transport
        self._timeout_s = timeout_s
        self._verify_tls = verify_tls
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        from pocketserver.net.transport import guarded_transport

        transport = self._transport or guarded_transport(
            self.policy,
            self._resolver,
            max_connections=2,
            keepalive_expiry=1.0,
            verify_tls=self._verify_tls,
        )
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout_s),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def _json(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        body: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        """One request; the answer's JSON object.

        Raises:
            AddressBlocked: the host is not allowed.
            IdentityServerRefused: a non-2xx answer.
            IdentityServerError: unreachable, too slow, too long, or not a JSON object.
        """
        import httpx

        headers = {"Accept": "application/json"}
        if access_token is not None:
            headers["Authorization"] = f"Bearer {access_token}"
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            with trio.fail_after(2 * self._timeout_s):
                async with client.stream(method, url, content=content, headers=headers) as r:
                    raw = bytearray()
                    async with aclosing(cast(AsyncGenerator[bytes], r.aiter_bytes())) as chunks:
                        async for chunk in chunks:
                            raw += chunk
                            if len(raw) > MAX_RESPONSE_BYTES:
                                break
                    status = r.status_code
        except AddressBlocked:
            raise
        except (httpx.HTTPError, httpx.InvalidURL, trio.TooSlowError) as e:
            raise IdentityServerError(f"identity server unreachable ({type(e).__name__})") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise IdentityServerError("identity server answer is too long")
        try:
            parsed = json.loads(bytes(raw).decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError, RecursionError):
            parsed = None
        if not 200 <= status < 300:
            errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
            raise IdentityServerRefused(status, errcode if isinstance(errcode, str) else None)
        if not isinstance(parsed, dict):
            raise IdentityServerError("identity server answer is not a JSON object")
        return parsed

    async def lookup(
        self, id_server: str, access_token: str, medium: str, address: str
    ) -> str | None:
        """The user ID bound to ``medium``/``address``, or None (identity-service-api.md
        "Association lookup": ``hash_details``, then a ``sha256`` lookup, or a ``none``
        one if that is all the server offers).

        Raises:
            AddressBlocked, IdentityServerRefused, IdentityServerError.
        """
        base = _base_url(id_server)
        async with self._limiter, self._client() as client:
            details = await self._json(
                client, "GET", f"{base}/hash_details", access_token=access_token
            )
            algorithms = details.get("algorithms")
            pepper = details.get("lookup_pepper")
            if not isinstance(algorithms, list) or not isinstance(pepper, str) or not pepper:
                raise IdentityServerError("identity server sent unusable hash_details")
            if "sha256" in algorithms:
                algorithm, value = "sha256", lookup_hash(address, medium, pepper)
            elif "none" in algorithms:
                algorithm, value = "none", f"{address} {medium}"
            else:
                raise IdentityServerError("identity server offers no lookup algorithm we know")
            found = await self._json(
                client,
                "POST",
                f"{base}/lookup",
                access_token=access_token,
                body={"addresses": [value], "algorithm": algorithm, "pepper": pepper},
            )
        mappings = found.get("mappings")
        mxid = mappings.get(value) if isinstance(mappings, dict) else None
        if mxid is None:
            return None
        if not isinstance(mxid, str) or not is_valid_user_id(mxid):
            raise IdentityServerError("identity server mapped the address to no valid user ID")
        return mxid

    async def store_invite(
        self, id_server: str, access_token: str, fields: Mapping[str, object]
    ) -> StoredInvite:
        """Ask the identity server to hold an invite (``POST /store-invite``).

        Raises:
            AddressBlocked, IdentityServerRefused, IdentityServerError.
        """
        base = _base_url(id_server)
        async with self._limiter, self._client() as client:
            data = await self._json(
                client, "POST", f"{base}/store-invite", access_token=access_token, body=fields
            )
        return _stored_invite(data, f"{base}/pubkey/isvalid")

    async def key_is_valid(self, key_validity_url: str, public_key: str) -> bool:
        """Whether the identity server still vouches for ``public_key``
        (``GET <key_validity_url>?public_key=...`` answers ``{"valid": true}``).

        Raises:
            AddressBlocked, IdentityServerRefused, IdentityServerError (also for a URL
            that is not https).
        """
        import httpx

        if not is_https_url(key_validity_url):
            raise IdentityServerError("key_validity_url is not an https URL")
        async with self._limiter, self._client() as client:
            url = httpx.URL(key_validity_url).copy_merge_params({"public_key": public_key})
            data = await self._json(client, "GET", str(url))
        return data.get("valid") is True


def _base_url(id_server: str) -> str:
    if not is_valid_server_name(id_server):
        raise IdentityServerError(f"not an identity server name: {id_server!r}")
    return f"https://{id_server}/_matrix/identity/v2"


def _stored_invite(data: Mapping[str, object], default_validity_url: str) -> StoredInvite:
    token = data.get("token")
    display_name = data.get("display_name")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise IdentityServerError("identity server sent no valid invite token")
    if not isinstance(display_name, str):
        raise IdentityServerError("identity server sent no display_name")
    raw_keys = data.get("public_keys", [])
    if not isinstance(raw_keys, list) or len(raw_keys) > MAX_PUBLIC_KEYS:
        raise IdentityServerError("identity server sent unusable public_keys")
    keys: list[PublicKey] = []
    for entry in raw_keys:
        key = entry.get("public_key") if isinstance(entry, dict) else None
        url = entry.get("key_validity_url") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not isinstance(url, str) or not is_https_url(url):
            raise IdentityServerError("identity server sent an unusable public key")
        keys.append(PublicKey(key, url))
    single = data.get("public_key")
    if isinstance(single, str):
        fallback = PublicKey(single, default_validity_url)
    elif keys:
        fallback = keys[0]
    else:
        raise IdentityServerError("identity server sent no public key")
    return StoredInvite(token, display_name, tuple(keys or [fallback]), fallback)
