"""Outbound federation HTTP: requests to other homeservers, signed, checked and bounded.

Every request goes through :func:`pocketserver.net.transport.guarded_transport`: the
destination is resolved (:mod:`pocketserver.federation.resolver`), each target's
addresses are checked against ``ip_range_blacklist``/``ip_range_whitelist`` and the
connection goes to a checked address; the TLS certificate is checked against the name
the spec says (SNI with it, when it is a DNS name). Connections are pooled and reused,
with one global cap (``max_connections``) so that a small host does not run out of
file handles while joining a busy room; requests past the cap wait for a free
connection within their own timeout.

Each request has an overall deadline (``timeout_s``: :data:`DEFAULT_TIMEOUT_S`, or
:data:`LONG_TIMEOUT_S` for joins and ``/state``) and a response size cap; big
answers are read as a stream (:meth:`FederationClient.stream`). The
``Authorization: X-Matrix ...`` header comes from the injected ``sign_request``
callable (the keyring's), called with the method, the destination, the exact request
target that is sent (raw path and query string) and the JSON content.

Failures are the exceptions below, all :class:`FederationError`:
:class:`FederationBlocked` (whitelist or IP ranges, before any connection),
:class:`FederationUnreachable` (DNS, connection, :class:`FederationTlsError`,
:class:`FederationTimeout`), :class:`FederationHttpError` (the remote's status with
its Matrix ``errcode``/``error``), :class:`FederationResponseTooLarge` and
:class:`FederationBadResponse`.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlencode

import trio

from pocketserver import __version__
from pocketserver.federation.errors import (
    FederationBadResponse,
    FederationBlocked,
    FederationError,
    FederationHttpError,
    FederationResponseTooLarge,
    FederationTimeout,
    FederationTlsError,
    FederationUnreachable,
)
from pocketserver.federation.resolver import (
    WELL_KNOWN_MAX_SIZE,
    DiscoveryError,
    ResolvedServer,
    ServerResolver,
    SrvLookup,
    WellKnownCache,
    WellKnownResponse,
    WellKnownUnavailable,
    dns_srv_lookup,
)
from pocketserver.net.addresses import (
    AddressBlocked,
    AddressPolicy,
    Resolver,
    outbound_policy,
    system_resolver,
)

if TYPE_CHECKING:
    import httpx

    from pocketserver.config.model import Config
    from pocketserver.net.transport import PoolTransport

__all__ = [
    "DEFAULT_MAX_RESPONSE",
    "DEFAULT_TIMEOUT_S",
    "LONG_TIMEOUT_S",
    "FederationBadResponse",
    "FederationBlocked",
    "FederationClient",
    "FederationError",
    "FederationHttpError",
    "FederationResponse",
    "FederationResponseTooLarge",
    "FederationTimeout",
    "FederationTlsError",
    "FederationUnreachable",
    "SignRequest",
    "encode_query",
    "federation_ssl_context",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
"""The deadline of an ordinary federation request (Synapse's default is 60 s too)."""
LONG_TIMEOUT_S = 600.0
"""For requests whose answer the remote takes minutes to build: send_join, /state."""
DEFAULT_MAX_RESPONSE = 16 * 1024 * 1024
"""The largest JSON answer :meth:`FederationClient.get_json` and friends read
(100 events of 64 KiB are 6.4 MiB); read bigger ones with ``stream``."""
ERROR_BODY_MAX = 64 * 1024
"""At most this much of an error answer is read (for its errcode)."""
DEFAULT_MAX_CONNECTIONS = 64
KEEPALIVE_S = 90.0
CONNECT_TIMEOUT_S = 20.0
MAX_REDIRECTS = 5
ROUTE_ENTRIES = 4096
USER_AGENT = f"pocketserver/{__version__}"

SignRequest = Callable[[str, str, str, object | None], str]
"""``(method, destination, uri, content) -> Authorization header value``: ``uri`` is the
raw path with its query string, exactly as sent; ``content`` the JSON body or None."""

Query = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class FederationClientStatistics:
    open_connections: int
    max_connections: int
    routes: int
    well_known_cached: int


def federation_ssl_context(verify: bool = True, ca_files: Sequence[Path] = ()) -> ssl.SSLContext:
    """The TLS settings of outbound federation.

    Args:
        verify: ``federation_verify_certificates``; False accepts any certificate.
        ca_files: ``federation_custom_ca_list``: when given, these CAs (PEM) replace
            the system's trusted ones, as in Synapse.

    Raises:
        OSError, ssl.SSLError: a CA file cannot be read or is not PEM.
    """
    import httpx

    if ca_files:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        for path in ca_files:
            context.load_verify_locations(cafile=str(path))
    else:
        context = httpx.create_ssl_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def encode_query(query: Query | None) -> str:
    """``?a=1&b=2`` (percent-encoded as Synapse does), or ``""``."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    items = query.items() if isinstance(query, Mapping) else query
    for key, value in items:
        if isinstance(value, str):
            pairs.append((key, value))
        else:
            pairs.extend((key, v) for v in value)
    return "?" + urlencode(pairs, quote_via=quote, safe="")


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _Routes:
    """Where connections for a (TLS name, port) go: the hosts of the latest resolution
    (SRV targets with that port). Bounded; a forgotten route falls back to the name."""

    def __init__(self, max_entries: int = ROUTE_ENTRIES) -> None:
        self._routes: OrderedDict[tuple[str, int], tuple[str, ...]] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._routes)

    def set(self, name: str, port: int, hosts: tuple[str, ...]) -> None:
        self._routes[(name, port)] = hosts
        self._routes.move_to_end((name, port))
        while len(self._routes) > self._max:
            self._routes.popitem(last=False)

    def __call__(self, host: str, port: int) -> Sequence[str]:
        return self._routes.get((host, port), (host,))


class FederationResponse:
    """A streamed answer: ``status``, ``headers`` and :meth:`aiter_bytes`."""

    def __init__(self, destination: str, response: httpx.Response, max_size: int) -> None:
        self._destination = destination
        self._response = response
        self._max = max_size
        self.status: int = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive; raises :class:`FederationResponseTooLarge`
        once more than ``max_size`` bytes came."""
        import httpx

        total = 0
        try:
            async with aclosing(cast(AsyncGenerator[bytes], self._response.aiter_raw())) as raw:
                async for chunk in raw:
                    total += len(chunk)
                    if total > self._max:
                        raise FederationResponseTooLarge(
                            self._destination, f"answer longer than {self._max} bytes"
                        )
                    yield chunk
        except httpx.TransportError as e:
            raise FederationUnreachable(self._destination, f"reading the answer: {e}") from e

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(parts)


class FederationClient:
    """Requests to other homeservers (see the module docstring).

    Args:
        sign_request: Builds the ``Authorization`` header (h-keyring's X-Matrix
            signer); None sends requests unsigned.
        policy: Which IP addresses may be connected to.
        ssl_context: TLS settings (:func:`federation_ssl_context`).
        domain_whitelist: ``federation_domain_whitelist``: if not None, only these
            server names are contacted.
        srv_lookup, address_resolver: DNS (tests replace them).
        max_connections: The cap on open connections, all destinations together.
        well_known_port: The port of ``https://<host>/.well-known/...`` (443; tests).
    """

    def __init__(
        self,
        sign_request: SignRequest | None,
        *,
        policy: AddressPolicy,
        ssl_context: ssl.SSLContext | None = None,
        domain_whitelist: frozenset[str] | None = None,
        srv_lookup: SrvLookup = dns_srv_lookup,
        address_resolver: Resolver = system_resolver,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        well_known_port: int = 443,
    ) -> None:
        import httpx

        from pocketserver.net.transport import guarded_transport

        self._sign = sign_request
        self._whitelist = domain_whitelist
        self._routes = _Routes()
        self._max_connections = max_connections
        self._transport: PoolTransport = guarded_transport(
            policy,
            address_resolver,
            max_connections=max_connections,
            keepalive_expiry=KEEPALIVE_S,
            ssl_context=ssl_context or federation_ssl_context(),
            routes=self._routes,
        )
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(DEFAULT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            follow_redirects=False,
            max_redirects=MAX_REDIRECTS,
            # Bodies are read raw (aiter_raw): ask for them uncompressed (httpx would
            # offer gzip and br by default, and a proxy in front of a server may apply it).
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )
        self._well_known_port = well_known_port
        self.resolver = ServerResolver(WellKnownCache(self._fetch_well_known), srv_lookup)

    @classmethod
    def from_config(
        cls, config: Config, sign_request: SignRequest | None, **kwargs: Any
    ) -> FederationClient:
        """The client that ``config``'s federation settings describe."""
        return cls(
            sign_request,
            policy=outbound_policy(config.ip_range_blacklist, config.ip_range_whitelist),
            ssl_context=federation_ssl_context(
                config.federation_verify_certificates, config.federation_custom_ca_list
            ),
            domain_whitelist=config.federation_domain_whitelist,
            **kwargs,
        )

    def statistics(self) -> FederationClientStatistics:
        return FederationClientStatistics(
            open_connections=self._transport.open_connections(),
            max_connections=self._max_connections,
            routes=len(self._routes),
            well_known_cached=len(self.resolver.well_known),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- JSON requests -------------------------------------------------------------

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_RESPONSE,
    ) -> Any:
        """``GET`` and parse the JSON answer (see :meth:`request_json`)."""
        return await self.request_json(
            "GET", destination, path, query=query, timeout_s=timeout_s, max_size=max_size
        )

    async def put_json(
        self,
        destination: str,
        path: str,
        content: object,
        *,
        query: Query | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_RESPONSE,
    ) -> Any:
        """``PUT`` ``content`` as JSON and parse the JSON answer."""
        return await self.request_json(
            "PUT",
            destination,
            path,
            query=query,
            content=content,
            timeout_s=timeout_s,
            max_size=max_size,
        )

    async def post_json(
        self,
        destination: str,
        path: str,
        content: object,
        *,
        query: Query | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_RESPONSE,
    ) -> Any:
        """``POST`` ``content`` as JSON and parse the JSON answer."""
        return await self.request_json(
            "POST",
            destination,
            path,
            query=query,
            content=content,
            timeout_s=timeout_s,
            max_size=max_size,
        )

    async def request_json(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: object | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_RESPONSE,
    ) -> Any:
        """One request whose answer is JSON.

        Args:
            method: ``GET``, ``PUT``, ``POST`` or ``DELETE``.
            destination: The server name, e.g. ``matrix.org`` or ``127.0.0.1:8448``.
            path: The path, already percent-encoded (``/_matrix/federation/v1/...``).
            query: Query parameters (encoded here; a list value repeats the key).
            content: The JSON body, or None for none.
            timeout_s: The deadline of the whole request, answer included.
            max_size: The largest answer read.

        Returns:
            The parsed JSON answer of a 2xx status.

        Raises:
            FederationError: one of its subclasses (see the module docstring).
        """
        async with self.stream(
            method,
            destination,
            path,
            query=query,
            content=content,
            timeout_s=timeout_s,
            max_size=max_size,
        ) as response:
            body = await response.read()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FederationBadResponse(destination, "the answer is not JSON") from None

    # --- streaming -------------------------------------------------------------------

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        content: object | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_size: int = DEFAULT_MAX_RESPONSE,
    ) -> AsyncIterator[FederationResponse]:
        """A request whose 2xx answer is read as a stream inside the ``async with``::

            async with client.stream("GET", dest, path, timeout_s=LONG_TIMEOUT_S,
                                     max_size=500 * 2**20) as response:
                async for chunk in response.aiter_bytes():
                    ...

        The deadline covers the whole block. An error status raises
        :class:`FederationHttpError` on entry. Same arguments as :meth:`request_json`.
        """
        with trio.move_on_after(timeout_s) as scope:
            async with self._open(
                method, destination, path, query, content, timeout_s, max_size
            ) as response:
                yield response
        if scope.cancelled_caught:
            raise FederationTimeout(destination, f"no complete answer within {timeout_s:g} s")

    @asynccontextmanager
    async def _open(
        self,
        method: str,
        destination: str,
        path: str,
        query: Query | None,
        content: object | None,
        timeout_s: float,
        max_size: int,
    ) -> AsyncIterator[FederationResponse]:
        import httpx
        from canonicaljson import encode_canonical_json

        if self._whitelist is not None and destination not in self._whitelist:
            raise FederationBlocked(destination, "not in federation_domain_whitelist")
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        try:
            resolved = await self.resolver.resolve(destination)
        except DiscoveryError as e:
            raise FederationUnreachable(destination, str(e)) from None
        uri = path + encode_query(query)
        headers = {"Host": resolved.host_header}
        body = b""
        if content is not None:
            body = encode_canonical_json(content)
            headers["Content-Type"] = "application/json"
        if self._sign is not None:
            headers["Authorization"] = self._sign(method, destination, uri, content)
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        response = await self._send_to_targets(
            resolved, method, uri, headers, body, timeout, destination
        )
        try:
            if response.status_code >= 300:
                raise await self._http_error(destination, response)
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_size:
                raise FederationResponseTooLarge(
                    destination, f"answer of {length} bytes, more than {max_size}"
                )
            yield FederationResponse(destination, response, max_size)
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()

    async def _send_to_targets(
        self,
        resolved: ResolvedServer,
        method: str,
        uri: str,
        headers: dict[str, str],
        body: bytes,
        http_timeout: httpx.Timeout,
        destination: str,
    ) -> httpx.Response:
        """Send to each port of the resolution's targets in turn (SRV), until one connects."""
        import httpx

        ports: dict[int, list[str]] = {}
        for target in resolved.targets:
            ports.setdefault(target.port, []).append(target.host)
        failure: FederationError | None = None
        for port, hosts in ports.items():
            self._routes.set(resolved.tls_name, port, tuple(hosts))
            url = httpx.URL(
                scheme="https", host=resolved.tls_name, port=port, raw_path=uri.encode("ascii")
            )
            request = self._http.build_request(
                method, url, headers=headers, content=body or None, timeout=http_timeout
            )
            try:
                return await self._http.send(request, stream=True)
            except AddressBlocked as e:
                failure = FederationBlocked(destination, str(e))
            except httpx.TimeoutException as e:
                failure = FederationTimeout(destination, f"{type(e).__name__}: {e}")
            except httpx.TransportError as e:
                tls = _tls_failure(e)
                if tls is not None:
                    failure = FederationTlsError(
                        destination, f"TLS with {resolved.tls_name} failed: {tls}"
                    )
                else:
                    failure = FederationUnreachable(destination, f"{type(e).__name__}: {e}")
        assert failure is not None
        raise failure

    @staticmethod
    async def _http_error(destination: str, response: httpx.Response) -> FederationHttpError:
        import httpx

        data = b""
        try:
            async for chunk in response.aiter_raw():
                data += chunk
                if len(data) > ERROR_BODY_MAX:
                    data = b""
                    break
        except httpx.TransportError:
            data = b""
        parsed: object | None
        try:
            parsed = json.loads(data) if data else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        errcode = error = None
        if isinstance(parsed, dict):
            errcode = parsed.get("errcode") if isinstance(parsed.get("errcode"), str) else None
            error = parsed.get("error") if isinstance(parsed.get("error"), str) else None
        return FederationHttpError(destination, response.status_code, errcode, error, parsed)

    # --- discovery -------------------------------------------------------------------

    async def _fetch_well_known(self, hostname: str) -> WellKnownResponse:
        """``GET https://<hostname>/.well-known/matrix/server``, following redirects (each
        hop's addresses checked), at most :data:`WELL_KNOWN_MAX_SIZE` bytes."""
        import httpx

        url = httpx.URL(
            scheme="https",
            host=hostname,
            port=None if self._well_known_port == 443 else self._well_known_port,
            path="/.well-known/matrix/server",
        )
        try:
            with trio.fail_after(DEFAULT_TIMEOUT_S):
                for _ in range(MAX_REDIRECTS + 1):
                    request = self._http.build_request("GET", url)
                    response = await self._http.send(request, stream=True)
                    try:
                        if response.is_redirect and "location" in response.headers:
                            url = url.join(response.headers["location"])
                            if url.scheme != "https":
                                raise WellKnownUnavailable("redirected away from https")
                            continue
                        if response.status_code >= 500:
                            raise WellKnownUnavailable(f"HTTP {response.status_code}")
                        body = b""
                        async for chunk in response.aiter_raw():
                            body += chunk
                            if len(body) > WELL_KNOWN_MAX_SIZE:
                                raise WellKnownUnavailable("the well-known is too large")
                        return WellKnownResponse(
                            response.status_code,
                            body,
                            {k.lower(): v for k, v in response.headers.items()},
                        )
                    finally:
                        await response.aclose()
                raise WellKnownUnavailable("too many redirects")
        except trio.TooSlowError:
            raise WellKnownUnavailable("timed out") from None
        except AddressBlocked as e:
            raise WellKnownUnavailable(f"blocked: {e}") from None
        except httpx.HTTPError as e:
            raise WellKnownUnavailable(f"{type(e).__name__}: {e}") from None
