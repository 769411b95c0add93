"""The running server: owns the trio nursery, the database, the services and hypercorn."""

from __future__ import annotations

import gc
import logging
import signal
import time
from functools import partial
from typing import TypeVar
from wsgiref.handlers import format_date_time

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from pocketserver.app import create_app
from pocketserver.config.model import Config, ListenerConfig
from pocketserver.core.crypto import key_id
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

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._date_second:
            self._date_value = format_date_time(now).encode("ascii")
            self._date_second = now
        headers = [(b"date", self._date_value)]
        headers.extend(super().response_headers(protocol))
        return headers


def _hypercorn_config(config: Config, listener: ListenerConfig) -> HypercornConfig:
    hc = _HypercornConfig()
    hc.bind = [_bind(addr, listener.port) for addr in listener.bind_addresses]
    hc.graceful_timeout = GRACEFUL_TIMEOUT_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    if listener.tls:
        hc.certfile = str(config.tls_certificate_path)
        hc.keyfile = str(config.tls_private_key_path)
    return hc


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until ``shutdown`` is set (or the task is cancelled).

    Start it with ``nursery.start(serve, config)`` to learn the bound addresses
    (``http://127.0.0.1:PORT``); a listener port of 0 binds a free port.
    Shutdown stops accepting, lets in-flight requests finish (at most
    ``GRACEFUL_TIMEOUT_S``), checkpoints the WAL and closes the database.
    """
    if shutdown is None:
        shutdown = trio.Event()
    services = await build_services(config)
    log.info("signing key %s, database %s", key_id(services.signing_key), config.database.path)
    try:
        async with trio.open_nursery() as background:
            await background.start(services.censor.run)
            await background.start(services.typing.run)
            await background.start(services.presence.run)
            await background.start(services.account_api.devices.activity.run)
            await background.start(services.push.run)
            await background.start(services.e2e_keys.stream.run)
            await background.start(services.pushers.run)
            await background.start(services.media.run)
            await background.start(services.guests.run)
            background.start_soon(_end_long_polls_on, shutdown, services)
            background.start_soon(_watch_other_writers, services)
            await background.start(services.appservice_sender.run)
            async with trio.open_nursery() as listeners:
                bound = await _start_listeners(listeners, config, services, shutdown)
                settle_memory()
                log.info("pocketserver for %s is ready", config.server_name)
                task_status.started(bound)
            # Every listener has shut down: stop the background tasks too.
            background.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
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
    nursery: trio.Nursery, config: Config, services: Services, shutdown: trio.Event
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
                    _hypercorn_config(config, listener),
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
    stops at once, without waiting for requests in flight.

    Returns:
        True after a graceful shutdown, False if a second signal cut it short.

    Raises:
        StartupError: the server could not start (unwrapped from trio's exception group).
    """
    shutdown = trio.Event()
    graceful = True
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def serve_then_stop() -> None:
                    await serve(config, shutdown=shutdown)
                    nursery.cancel_scope.cancel()  # done: stop waiting for signals

                nursery.start_soon(serve_then_stop)
                async for signum in signals:
                    name = signal.Signals(signum).name
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
