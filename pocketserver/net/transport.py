"""httpx transports whose connections go only to checked addresses.

:func:`pinned_transport` connects to one address checked beforehand, whatever host
name the URL has (URL previews check each hop themselves). :func:`guarded_transport`
is a pooled transport that resolves and checks the host of every new connection
(:func:`pocketserver.net.addresses.resolve_checked`) and connects to a checked
address (push gateways). Either way TLS verifies the certificate for the URL's host
name, and httpcore errors come out as the matching httpx errors; a refused host
raises :class:`~pocketserver.net.addresses.AddressBlocked`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx
import trio

from pocketserver.net.addresses import (
    AddressBlocked,
    AddressPolicy,
    HostUnresolvable,
    Resolver,
    resolve_checked,
    system_resolver,
)

_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except tuple(src for src, _ in _ERRORS) as e:
        for src, dst in _ERRORS:
            if isinstance(e, src):
                raise dst(str(e) or type(e).__name__) from e
        raise  # pragma: no cover - every source is in the table


class _Backend(httpcore.AsyncNetworkBackend):
    """trio's backend without unix sockets; subclasses choose where TCP goes."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedBackend(_Backend):
    """Connects to one checked address whatever host name the URL has."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self._address = address

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            self._address, port, timeout, local_address, socket_options
        )


Routes = Callable[[str, int], Sequence[str]]
"""``(URL host, port) -> hosts to connect to instead``, in order (federation: the SRV
targets of a TLS name); the URL's host still names the certificate to expect."""


def _no_routes(host: str, port: int) -> Sequence[str]:
    return (host,)


class _CheckingBackend(_Backend):
    """Resolves and checks the host of every new connection (or the hosts ``routes``
    names for it), then connects to a checked address (trying each in turn)."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver, routes: Routes) -> None:
        super().__init__()
        self._policy = policy
        self._resolver = resolver
        self._routes = routes

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception | None = None
        blocked: AddressBlocked | None = None
        for target in self._routes(host, port) or (host,):
            try:
                with trio.fail_after(float("inf") if timeout is None else timeout):
                    addresses = await resolve_checked(target, port, self._policy, self._resolver)
            except AddressBlocked as e:
                blocked = e  # another target may still be allowed
                continue
            except HostUnresolvable as e:
                error = httpcore.ConnectError(str(e))
                continue
            except trio.TooSlowError:
                error = httpcore.ConnectTimeout(f"resolving {target} timed out")
                continue
            for address in addresses:
                try:
                    return await self._inner.connect_tcp(
                        address, port, timeout, local_address, socket_options
                    )
                except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                    error = e
        if error is None:
            assert blocked is not None
            raise blocked
        raise error


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class PoolTransport(httpx.AsyncBaseTransport):
    """An httpcore connection pool on a given network backend, as an httpx transport."""

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend,
        *,
        max_connections: int = 1,
        keepalive_expiry: float | None = None,
        verify_tls: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(verify=verify_tls),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            resp = await self._pool.handle_async_request(req)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_ResponseStream(resp.stream),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    def open_connections(self) -> int:
        """How many connections the pool holds now (busy or idle)."""
        return len(self._pool.connections)


def pinned_transport(address: str) -> PoolTransport:
    """One connection to ``address`` (already checked), for any URL's host."""
    return PoolTransport(_PinnedBackend(address))


def guarded_transport(
    policy: AddressPolicy,
    resolver: Resolver = system_resolver,
    *,
    max_connections: int = 8,
    keepalive_expiry: float = 5.0,
    verify_tls: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    routes: Routes = _no_routes,
) -> PoolTransport:
    """A pool whose every new connection goes to a resolved address ``policy`` allows.

    A request to a refused host raises
    :class:`~pocketserver.net.addresses.AddressBlocked` (not an httpx error).
    ``verify_tls=False`` accepts any certificate (only for test rigs, see
    ``use_insecure_ssl_client_just_for_testing_do_not_use``); the address checks stay.
    ``ssl_context`` replaces the default one (federation's own CA list); ``routes``
    sends a connection for a URL host to other hosts (federation's SRV targets), each
    resolved and checked the same way.
    """
    return PoolTransport(
        _CheckingBackend(policy, resolver, routes),
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        verify_tls=verify_tls,
        ssl_context=ssl_context,
    )
