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

from pocketserver.account_data.room_upgrade import UpgradeTransfer
from pocketserver.account_data.service import AccountDataService
from pocketserver.account_data.sync_source import AccountDataSource
from pocketserver.accounts.account_api import build_account_api
from pocketserver.accounts.guests import GuestAccess
from pocketserver.accounts.openid import OpenIdTokens
from pocketserver.accounts.profiles import Profiles
from pocketserver.accounts.service import AccountService
from pocketserver.accounts.shared_secret import NonceStore
from pocketserver.app import create_app
from pocketserver.appservice.sender import TransactionSender
from pocketserver.appservice.service import AppServices
from pocketserver.appservice.thirdparty import ThirdParty
from pocketserver.cache import MemoryBudget
from pocketserver.config.model import Config, ListenerConfig
from pocketserver.core.crypto import key_id, read_signing_keys
from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.e2e.dehydrated import DehydratedDevices
from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.e2e.sync_source import DeviceListSource
from pocketserver.ephemeral.wiring import build_ephemeral
from pocketserver.key_backup.service import KeyBackupService
from pocketserver.media.wiring import build_media
from pocketserver.net.addresses import outbound_policy
from pocketserver.net.identity import IdentityClient
from pocketserver.preflight import startup_problems
from pocketserver.push.pushers import PusherService
from pocketserver.push.service import PushService
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.relations import index_relation
from pocketserver.rooms.retention import RedactionCensor
from pocketserver.rooms.search_index import index_event as index_search_text
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.third_party_invites import ThirdPartyInvites
from pocketserver.rooms.upgrade import RoomUpgrader
from pocketserver.rooms.writer import RoomWriter
from pocketserver.services import RateLimiters, Services
from pocketserver.storage.db import Database
from pocketserver.storage.events import max_stream_ordering
from pocketserver.storage.guard import ForeignDatabaseError
from pocketserver.storage.lock import AlreadyRunningError
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.handler import SyncHandler
from pocketserver.sync.legacy import LegacySync
from pocketserver.to_device.service import ToDeviceService
from pocketserver.to_device.sync_source import ToDeviceSource

log = logging.getLogger(__name__)

GRACEFUL_TIMEOUT_S = 10.0
# How often the server checks whether another process wrote to the database.
OTHER_WRITERS_POLL_S = 0.5


class StartupError(Exception):
    """The server cannot start (bad key file, database too new, port taken)."""


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


def _load_signing_key(config: Config) -> object:
    try:
        text = config.signing_key_path.read_text(encoding="utf-8")
        keys = read_signing_keys(text)
    except OSError as e:
        raise StartupError(
            f"cannot read signing key {config.signing_key_path}: {e.strerror}"
        ) from None
    except ValueError as e:
        raise StartupError(f"signing key {config.signing_key_path} is not valid: {e}") from None
    if not keys:
        raise StartupError(f"signing key file {config.signing_key_path} holds no key")
    return keys[0]


async def build_services(config: Config) -> Services:
    """Open the database (migrating it) and build every service. Blocking work runs in threads."""
    from pocketserver.storage.migrations import SchemaTooNewError

    budget = MemoryBudget(config.memory_budget)
    problems = await trio.to_thread.run_sync(startup_problems, config)
    if problems:
        raise StartupError("; ".join(problems))
    signing_key = await trio.to_thread.run_sync(_load_signing_key, config)
    try:
        db = await trio.to_thread.run_sync(
            partial(
                Database,
                config.database.path,
                memory_bytes=budget.sqlite_bytes,
                synchronous=config.database.synchronous,
                lock=True,
            )
        )
    except (SchemaTooNewError, ForeignDatabaseError, AlreadyRunningError) as e:
        raise StartupError(str(e)) from None
    except OSError as e:
        raise StartupError(f"cannot open database {config.database.path}: {e}") from None
    import nacl.signing

    assert isinstance(signing_key, nacl.signing.SigningKey)
    notifier = Notifier(await db.read(max_stream_ordering))
    room_store = RoomStore(db, budget)
    reader = EventReader(room_store, budget)
    ratelimits = RateLimiters.from_config(config)
    writer = RoomWriter(room_store, config.server_name, signing_key, notifier)
    writer.add_listener(reader.on_persisted)
    writer.add_txn_hook(index_relation)
    writer.add_txn_hook(index_search_text)
    writer.add_listener(ratelimits.rooms.on_persisted)
    room_client = RoomClient(writer, reader, ratelimits.message, ratelimits.rooms)
    accounts = AccountService(db, config, budget)
    account_api = build_account_api(
        db,
        accounts,
        room_client,
        access_lifetime_ms=config.refreshable_access_token_lifetime_ms,
        refresh_lifetime_ms=config.refresh_token_lifetime_ms,
        failed_logins=ratelimits.login_failures,
        token_validity=config.rc_registration_token_validity,
        login_token_lifetime_ms=config.login_token_lifetime_ms,
    )
    sync = SyncHandler(room_store, reader, notifier, budget)
    account_data = await AccountDataService.open(db, notifier, budget)
    sync.add_source(AccountDataSource(account_data))
    to_device = await ToDeviceService.open(db, notifier, config.server_name)
    sync.add_source(ToDeviceSource(to_device))
    sync.ignored_users = account_data.ignored_users
    device_lists = await DeviceListStream.open(db, notifier)
    accounts.tokens_revoked_listeners.append(device_lists.poke)
    accounts.device_list_listeners.append(device_lists.committed)
    e2e_keys = E2eKeys(db, device_lists, config.server_name)
    device_list_source = DeviceListSource(e2e_keys)
    sync.add_source(device_list_source)
    accounts.tokens_revoked_listeners.append(device_list_source.forget_key_counts)
    typing, receipts, presence = await build_ephemeral(
        config, room_client, notifier, sync, account_data
    )
    media, url_previews = await build_media(db, config, budget)
    directory = Directory(room_store, config.server_name)
    legacy_sync = LegacySync(
        room_client,
        notifier,
        directory,
        presence,
        (AccountDataSource(account_data), receipts, typing, presence),
        account_data.ignored_users,
    )
    push = PushService(room_store, reader, notifier, budget, config.server_name)
    upgrader = RoomUpgrader(room_client, directory)
    upgrader.after_upgrade = UpgradeTransfer(account_data, push.rules).transfer
    appservices = AppServices(config.app_services, db, config.server_name)
    if appservices.all:
        await appservices.ensure_senders()
        ratelimits.exempt_users(appservices.is_unlimited)
        directory.ask_unknown_alias = appservices.query_alias
    appservice_sender = TransactionSender(appservices, db, reader)
    writer.add_listener(appservice_sender.on_persisted)
    outbound = outbound_policy(config.ip_range_blacklist, config.ip_range_whitelist)
    if config.use_insecure_ssl_client_just_for_testing_do_not_use:
        log.warning(
            "use_insecure_ssl_client_just_for_testing_do_not_use is set: identity server"
            " certificates are NOT verified"
        )
    return Services(
        config=config,
        db=db,
        budget=budget,
        signing_key=signing_key,
        accounts=accounts,
        guests=GuestAccess(db, accounts, room_client, enabled=config.allow_guest_access),
        registration_nonces=NonceStore(),
        ratelimits=ratelimits,
        notifier=notifier,
        room_store=room_store,
        rooms=writer,
        events=reader,
        censor=RedactionCensor(reader, config.redaction_retention_period_ms),
        room_client=room_client,
        directory=directory,
        profiles=Profiles(room_client, config.server_name),
        sync=sync,
        typing=typing,
        receipts=receipts,
        presence=presence,
        account_api=account_api,
        account_data=account_data,
        push=push,
        pushers=PusherService(db, reader, policy=outbound),
        room_upgrades=upgrader,
        media=media,
        openid=OpenIdTokens(db, config.server_name),
        third_party_invites=ThirdPartyInvites(
            room_client,
            IdentityClient(
                outbound,
                verify_tls=not config.use_insecure_ssl_client_just_for_testing_do_not_use,
            ),
            config.server_name,
            lookups_enabled=config.enable_3pid_lookup,
        ),
        url_previews=url_previews,
        to_device=to_device,
        key_backup=KeyBackupService(db),
        e2e_keys=e2e_keys,
        cross_signing=CrossSigning(db, device_lists),
        dehydrated=DehydratedDevices(e2e_keys, to_device, accounts),
        legacy_sync=legacy_sync,
        appservices=appservices,
        appservice_sender=appservice_sender,
        thirdparty=ThirdParty(appservices),
    )


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
            services.push.connect(services)
            await background.start(services.push.run)
            await background.start(services.e2e_keys.stream.run)
            services.push.evaluator.notification_listeners.append(
                services.pushers.delivery.on_notifications
            )
            services.push.evaluator.read_listeners.append(services.pushers.delivery.on_read)
            await background.start(services.pushers.run)
            await background.start(services.media.run)
            services.rooms.add_listener(services.guests.on_persisted)
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
