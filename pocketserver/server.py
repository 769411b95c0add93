"""The running server: owns the trio nursery, the database, the services and hypercorn."""

from __future__ import annotations

import gc
import logging
import signal
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar
from wsgiref.handlers import format_date_time

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from pocketserver.app import create_app
from pocketserver.config.model import Config, ListenerConfig
from pocketserver.core.crypto import key_id
from pocketserver.net.tls import ListenerTls
from pocketserver.services import Services, StartupError, build_services

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10.0
# How often the server checks whether another process wrote to the database.
OTHER_WRITERS_POLL_S = 0.5


def _bind(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class _HypercornConfig(HypercornConfig):
    """hypercorn's settings, with the ``Date`` header formatted once per second.

    hypercorn formats it for every response (``time.gmtime`` and string formatting):
    about 1.7% of the server's CPU per small request.
    """

    include_date_header = False  # added here, from the cache

    _date_second = -1
    _date_value = b""
    tls_context: ssl.SSLContext | None = None
    """The shared, reloading server context of TLS listeners (net/tls.py)."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_context is not None:
            return self.tls_context
        return super().create_ssl_context()

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._date_second:
            self._date_value = format_date_time(now).encode("ascii")
            self._date_second = now
        headers = [(b"date", self._date_value)]
        headers.extend(super().response_headers(protocol))
        return headers


def _server_ssl_context() -> ssl.SSLContext:
    """An empty server context with hypercorn's settings (ciphers, TLS 1.2 or later,
    no compression, ALPN h2 and http/1.1); the certificate is loaded by ListenerTls."""
    hc = HypercornConfig()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers(hc.ciphers)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(hc.alpn_protocols)
    return context


def listener_tls(config: Config) -> ListenerTls | None:
    """The certificate of the TLS listeners, if any listener has ``tls: true``.

    Raises:
        StartupError: the certificate or key cannot be read or does not load.
    """
    if not any(listener.tls for listener in config.listeners):
        return None
    assert config.tls_certificate_path is not None  # the loader requires both
    assert config.tls_private_key_path is not None
    try:
        return ListenerTls(
            config.tls_certificate_path, config.tls_private_key_path, _server_ssl_context
        )
    except (OSError, ssl.SSLError, ValueError) as e:
        raise StartupError(
            f"TLS certificate {config.tls_certificate_path} with key "
            f"{config.tls_private_key_path} does not load: {e}"
        ) from None


class HupHandlers:
    """What SIGHUP does: each callback runs (the TLS certificate is looked at again)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def fire(self) -> None:
        for callback in self.callbacks:
            callback()


def _hypercorn_config(
    config: Config, listener: ListenerConfig, tls: ListenerTls | None = None
) -> HypercornConfig:
    hc = _HypercornConfig()
    hc.bind = [_bind(addr, listener.port) for addr in listener.bind_addresses]
    hc.graceful_timeout = GRACEFUL_TIMEOUT_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    if listener.tls:
        # certfile/keyfile turn TLS on in hypercorn; the context itself is tls's.
        hc.certfile = str(config.tls_certificate_path)
        hc.keyfile = str(config.tls_private_key_path)
        assert tls is not None
        hc.tls_context = tls.context
    return hc


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    hup: HupHandlers | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until ``shutdown`` is set (or the task is cancelled).

    Start it with ``nursery.start(serve, config)`` to learn the bound addresses
    (``http://127.0.0.1:PORT``); a listener port of 0 binds a free port.
    Shutdown stops accepting, lets in-flight requests finish (at most
    ``GRACEFUL_TIMEOUT_S``), checkpoints the WAL and closes the database.
    ``hup`` gets the callbacks that SIGHUP should run.
    """
    if shutdown is None:
        shutdown = trio.Event()
    services = await build_services(config)
    try:
        tls = listener_tls(config)
    except StartupError:
        await trio.to_thread.run_sync(services.db.close)
        raise
    if tls is not None and hup is not None:
        hup.callbacks.append(tls.check_soon)
    log.info("signing key %s, database %s", key_id(services.signing_key), config.database.path)
    try:
        async with trio.open_nursery() as background:
            await background.start(services.censor.run)
            await background.start(services.auth_index.run)
            await background.start(services.typing.run)
            await background.start(services.presence.run)
            await background.start(services.account_api.devices.activity.run)
            await background.start(services.push.run)
            await background.start(services.e2e_keys.stream.run)
            await background.start(services.federation_e2e.run)
            if services.device_list_publisher is not None:
                await background.start(services.device_list_publisher.run)
            if services.device_lists_on_join is not None:
                await background.start(services.device_lists_on_join.run)
            if services.presence_out is not None:
                await background.start(services.presence_out.run)
            await background.start(services.pushers.run)
            await background.start(services.media.run)
            await background.start(services.guests.run)
            await background.start(services.upgrade_follower.run)
            background.start_soon(_end_long_polls_on, shutdown, services)
            background.start_soon(_watch_other_writers, services)
            await background.start(services.appservice_sender.run)
            if tls is not None:
                await background.start(tls.run)
            await background.start(services.federation_sender.run)
            await background.start(services.staged_pdus.run)
            await background.start(services.partial_state.run)
            async with trio.open_nursery() as listeners:
                bound = await _start_listeners(listeners, config, services, shutdown, tls)
                settle_memory()
                log.info("pocketserver for %s is ready", config.server_name)
                task_status.started(bound)
            # Every listener has shut down: stop the background tasks too.
            background.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await services.federation_client.aclose()
            await trio.to_thread.run_sync(services.db.close)
        log.info("database closed")


async def _end_long_polls_on(shutdown: trio.Event, services: Services) -> None:
    """At shutdown, answer waiting /sync long-polls now: hypercorn waits for requests in
    flight (up to ``GRACEFUL_TIMEOUT_S``), and an idle client's /sync waits 30 s."""
    await shutdown.wait()
    services.notifier.close()


async def _watch_other_writers(services: Services) -> None:
    """Notice commits by other processes (``reset-password`` deletes a user's access
    tokens while the server runs) and drop the access tokens cached in memory, so that
    a deleted token stops working within ``OTHER_WRITERS_POLL_S``."""
    while True:
        await trio.sleep(OTHER_WRITERS_POLL_S)
        if await services.db.changed_elsewhere():
            log.info("another process changed the database: dropping cached access tokens")
            services.accounts.forget_all_tokens()


def settle_memory() -> None:
    """Once started: freeze what start-up built, and give its freed heap back to the OS.

    Everything alive now (modules, services, the routes) lives as long as the process:
    freezing it keeps full garbage collections from walking it again (they took 70-90
    ms pauses under load here). Imports, migrations and route compilation leave
    megabytes of freed heap that glibc keeps resident; ``malloc_trim`` returns it
    (measured: idle RSS 1.5-2 MB lower). Elsewhere (musl, BSD libc) there is no
    ``malloc_trim`` and only the freeze happens.
    """
    gc.collect()
    gc.freeze()
    import ctypes  # already imported by trio: costs nothing

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


async def _start_listeners(
    nursery: trio.Nursery,
    config: Config,
    services: Services,
    shutdown: trio.Event,
    tls: ListenerTls | None,
) -> list[str]:
    """Start one hypercorn per listener, each with the routes of its resources."""
    bound: list[str] = []
    for listener in config.listeners:
        app = create_app(services, listener.resources, x_forwarded=listener.x_forwarded)
        try:
            addrs = await nursery.start(
                partial(
                    hypercorn_serve,
                    app,
                    _hypercorn_config(config, listener, tls),
                    shutdown_trigger=shutdown.wait,
                )
            )
        except (OSError, BaseExceptionGroup) as e:
            os_error = _find_in(e, OSError)
            if os_error is None:
                raise
            raise StartupError(
                f"cannot listen on {', '.join(listener.bind_addresses)} port "
                f"{listener.port}: {os_error.strerror or os_error}"
            ) from None
        bound.extend(addrs)
        log.info("listening on %s for %s", " ".join(addrs), ", ".join(sorted(listener.resources)))
    return bound


E = TypeVar("E", bound=BaseException)


def _find_in(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` itself or the first ``kind`` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_in(inner, kind)
            if found is not None:
                return found
    return None


async def run_until_signalled(config: Config) -> bool:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; a second signal
    stops at once, without waiting for requests in flight. SIGHUP re-reads the TLS
    certificate (if it changed), as Synapse does.

    Returns:
        True after a graceful shutdown, False if a second signal cut it short.

    Raises:
        StartupError: the server could not start (unwrapped from trio's exception group).
    """
    shutdown = trio.Event()
    hup = HupHandlers()
    graceful = True
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def serve_then_stop() -> None:
                    await serve(config, shutdown=shutdown, hup=hup)
                    nursery.cancel_scope.cancel()  # done: stop waiting for signals

                nursery.start_soon(serve_then_stop)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        log.info("received SIGHUP: looking at the TLS certificate again")
                        hup.fire()
                        continue
                    if not shutdown.is_set():
                        log.info("received %s: shutting down (send it again to stop at once)", name)
                        shutdown.set()
                        continue
                    log.warning("received %s again: stopping without waiting for requests", name)
                    graceful = False
                    nursery.cancel_scope.cancel()  # serve() still closes the database
                    break
    except BaseExceptionGroup as group:
        startup_error = _find_in(group, StartupError)
        if startup_error is not None:
            raise startup_error from None
        raise
    return graceful
