"""The services of one running server, built and wired once by :func:`build_services`.

This is the one composition function: ``server.py`` and the tests both call it, every
dependency is handed to a constructor (or registered as a listener) here, and nothing
is set on a service after it is built. The result is handed to
``create_app(services)``: no globals, no service locator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import nacl.signing
import trio

from pocketserver.account_data.room_upgrade import UpgradeTransfer
from pocketserver.account_data.service import AccountDataService
from pocketserver.account_data.sync_source import AccountDataSource
from pocketserver.accounts.account_api import AccountApi, build_account_api
from pocketserver.accounts.guests import GuestAccess
from pocketserver.accounts.openid import OpenIdTokens
from pocketserver.accounts.profiles import Profiles
from pocketserver.accounts.service import AccountService
from pocketserver.accounts.shared_secret import NonceStore
from pocketserver.appservice.sender import TransactionSender
from pocketserver.appservice.service import AppServices
from pocketserver.appservice.thirdparty import ThirdParty
from pocketserver.cache import MemoryBudget
from pocketserver.config.model import Config
from pocketserver.core.crypto import read_signing_keys
from pocketserver.core.locality import Locality
from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.e2e.dehydrated import DehydratedDevices
from pocketserver.e2e.keys import E2eKeys
from pocketserver.e2e.stream import DeviceListStream
from pocketserver.e2e.sync_source import DeviceListSource
from pocketserver.ephemeral.presence import PresenceService
from pocketserver.ephemeral.receipts import ReceiptService
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.federation import event_keys
from pocketserver.federation.e2e.on_join import DeviceListsOnJoin
from pocketserver.federation.e2e.outbound import DeviceListPublisher, DeviceListSender
from pocketserver.federation.e2e.requests import FederationRequests
from pocketserver.federation.e2e.service import FederationE2e
from pocketserver.federation.edus import EphemeralEdus
from pocketserver.federation.history import FederationHistory
from pocketserver.federation.inbound import PduPipeline, StagedPduWorker, TransactionReceiver
from pocketserver.federation.invites import InviteReceiver
from pocketserver.federation.joins import ResidentMemberships
from pocketserver.federation.keyring import Keyring
from pocketserver.federation.outbound import LazyFederationClient
from pocketserver.federation.partial_state import PartialStateResync
from pocketserver.federation.policy_signing import SIGN_TIMEOUT_S, PolicySigning
from pocketserver.federation.presence_out import PresenceOut
from pocketserver.federation.remote_backfill import RemoteBackfill
from pocketserver.federation.remote_directory import query_remote_alias
from pocketserver.federation.remote_hierarchy import RemoteHierarchy
from pocketserver.federation.remote_join import RemoteJoins
from pocketserver.federation.remote_memberships import RemoteMemberships
from pocketserver.federation.remote_profiles import RemoteProfiles
from pocketserver.federation.remote_public_rooms import RemoteRoomDirectory
from pocketserver.federation.sender import FederationSender
from pocketserver.federation.sender.producers import receipt_forwarder
from pocketserver.federation.sender.transport import ClientTransport
from pocketserver.federation.third_party_exchange import ThirdPartyForwarder
from pocketserver.key_backup.service import KeyBackupService
from pocketserver.media.remote import RemoteMediaFetcher
from pocketserver.media.repository import MediaRepository
from pocketserver.media.wiring import build_media
from pocketserver.net.addresses import outbound_policy
from pocketserver.net.identity import IdentityClient
from pocketserver.preflight import startup_problems
from pocketserver.push.pushers import PusherService
from pocketserver.push.service import PushService
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.auth_index import AuthChainIndexer
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.create import RoomCreator
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.hierarchy import SpaceHierarchy
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.membership import Membership
from pocketserver.rooms.out_of_band import OutOfBandMemberships
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.relations import index_relation
from pocketserver.rooms.reports import Reports
from pocketserver.rooms.retention import RedactionCensor
from pocketserver.rooms.search_index import index_event as index_search_text
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.third_party_invites import ThirdPartyInvites
from pocketserver.rooms.upgrade import RoomUpgrader
from pocketserver.rooms.upgrade_follow import UpgradeFollower
from pocketserver.rooms.writer import PersistedEvent, RoomWriter
from pocketserver.storage import receipts as receipt_store
from pocketserver.storage import users as users_store
from pocketserver.storage.db import Database
from pocketserver.storage.events import max_stream_ordering
from pocketserver.storage.guard import ForeignDatabaseError
from pocketserver.storage.lock import AlreadyRunningError
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.handler import SyncHandler
from pocketserver.sync.legacy import LegacySync
from pocketserver.sync.stored_filters import StoredFilters
from pocketserver.to_device.service import RemoteMessages, ToDeviceService
from pocketserver.to_device.sync_source import ToDeviceSource

if TYPE_CHECKING:  # the previewer (and httpx) is imported only when previews are on
    from pocketserver.media.preview import UrlPreviewer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimiters:
    login_address: RateLimiter
    login_account: RateLimiter
    login_failures: RateLimiter
    registration: RateLimiter
    message: RateLimiter
    rooms: RoomActionLimits
    media_create: RateLimiter
    presence: RateLimiter
    """``rc_presence.per_user`` for ``PUT /presence``; /sync's ``set_presence`` has its
    own bucket of the same size (as Synapse: one limiter in each servlet)."""
    presence_sync: RateLimiter

    @classmethod
    def from_config(
        cls, config: Config, *, exempt: Callable[[Hashable], bool] | None = None
    ) -> RateLimiters:
        """``exempt``: users never limited by the limiters keyed by user ID
        (application services' users with ``rate_limited: false``)."""
        return cls(
            login_address=RateLimiter(config.rc_login.address),
            login_account=RateLimiter(config.rc_login.account),
            login_failures=RateLimiter(config.rc_login.failed_attempts),
            registration=RateLimiter(config.rc_registration),
            message=RateLimiter(config.rc_message, exempt=exempt),
            rooms=RoomActionLimits(config.rate_limits, exempt=exempt),
            media_create=RateLimiter(config.rate_limits.media_create, exempt=exempt),
            presence=RateLimiter(config.rate_limits.presence_per_user, exempt=exempt),
            presence_sync=RateLimiter(config.rate_limits.presence_per_user, exempt=exempt),
        )


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    db: Database
    budget: MemoryBudget
    signing_key: nacl.signing.SigningKey
    accounts: AccountService
    guests: GuestAccess
    registration_nonces: NonceStore
    ratelimits: RateLimiters
    notifier: Notifier
    room_store: RoomStore
    rooms: RoomWriter
    events: EventReader
    censor: RedactionCensor
    auth_index: AuthChainIndexer
    room_client: RoomClient
    directory: Directory
    profiles: Profiles
    sync: SyncHandler
    filters: StoredFilters
    typing: TypingService
    receipts: ReceiptService
    presence: PresenceService
    account_api: AccountApi
    account_data: AccountDataService
    push: PushService
    pushers: PusherService
    room_upgrades: RoomUpgrader
    upgrade_follower: UpgradeFollower
    to_device: ToDeviceService
    key_backup: KeyBackupService
    e2e_keys: E2eKeys
    federation_e2e: FederationE2e
    cross_signing: CrossSigning
    dehydrated: DehydratedDevices
    media: MediaRepository
    remote_media: RemoteMediaFetcher
    legacy_sync: LegacySync
    openid: OpenIdTokens
    appservices: AppServices
    appservice_sender: TransactionSender
    thirdparty: ThirdParty
    third_party_invites: ThirdPartyInvites
    membership: Membership
    room_creator: RoomCreator
    reports: Reports
    keyring: Keyring
    federation_client: LazyFederationClient
    remote_directory: RemoteRoomDirectory
    """Other servers' room directories (``/publicRooms?server=``)."""
    space_hierarchy: SpaceHierarchy
    """Space hierarchies, asking other servers about rooms we do not hold."""
    """Other servers' room directories (``/publicRooms?server=``)."""
    federation_sender: FederationSender
    federation_history: FederationHistory
    resident_memberships: ResidentMemberships
    invites: InviteReceiver
    transactions: TransactionReceiver
    staged_pdus: StagedPduWorker
    partial_state: PartialStateResync
    remote_backfill: RemoteBackfill
    url_previews: UrlPreviewer | None = None
    device_list_publisher: DeviceListPublisher | None = None
    """Hands our users' device list changes to the federation sender (None: no sender)."""
    device_lists_on_join: DeviceListsOnJoin | None = None
    """Sends our user's device list to servers new to them when they join a room."""
    presence_out: PresenceOut | None = None
    """Sends our users' presence to the servers sharing a room (None: presence off)."""


async def _user_active(db: Database, user_id: str) -> bool:
    """Whether ``user_id`` is a registered account that is not deactivated."""
    user = await db.read(users_store.get_user, user_id)
    return user is not None and not user.deactivated


class StartupError(Exception):
    """The server cannot start (bad key file, database too new, port taken)."""


def _load_signing_key(config: Config) -> nacl.signing.SigningKey:
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
    key = keys[0]
    assert isinstance(key, nacl.signing.SigningKey)
    return key


def _open_database(config: Config, budget: MemoryBudget) -> Database:
    from pocketserver.storage.migrations import SchemaTooNewError

    try:
        return Database(
            config.database.path,
            memory_bytes=budget.sqlite_bytes,
            synchronous=config.database.synchronous,
            lock=True,
        )
    except (SchemaTooNewError, ForeignDatabaseError, AlreadyRunningError) as e:
        raise StartupError(str(e)) from None
    except OSError as e:
        raise StartupError(f"cannot open database {config.database.path}: {e}") from None


def _stop_typing_on_leave(typing: TypingService, event: PersistedEvent) -> None:
    """Someone no longer joined stops typing there at once."""
    pdu = event.pdu
    if event.live and pdu.get("type") == "m.room.member":
        content, target = pdu.get("content"), pdu.get("state_key")
        if isinstance(content, dict) and isinstance(target, str):
            typing.membership_changed(target, event.room_id, content.get("membership"))


def _forget_remote_profile(
    profiles: RemoteProfiles, locality: Locality, event: PersistedEvent
) -> None:
    """A member event of another server's user may carry a new name or avatar."""
    target = event.pdu.get("state_key")
    if isinstance(target, str) and not locality.is_mine(target):
        profiles.on_member_event(event.pdu)


def _bump_local_sender(presence: PresenceService, suffix: str, event: PersistedEvent) -> None:
    """A local user who sends an event is active."""
    sender = event.pdu.get("sender")
    if event.live and isinstance(sender, str) and sender.endswith(suffix):
        presence.bump_active(sender)


async def build_services(
    config: Config,
    *,
    federation_requests: FederationRequests | None = None,
    device_list_sender: DeviceListSender | None = None,
) -> Services:
    """Open the database (migrating it), build every service and wire them together.
    Blocking work runs in threads. The server starts the services' ``run`` tasks.

    Tests may replace how the end-to-end encryption services ask other servers
    (``federation_requests``; the server's federation client by default) and where our
    users' device list changes go (``device_list_sender``; the federation sender).

    Raises:
        StartupError: the configuration, the signing key or the database is unusable.
    """
    budget = MemoryBudget(config.memory_budget)
    problems = await trio.to_thread.run_sync(startup_problems, config)
    if problems:
        raise StartupError("; ".join(problems))
    signing_key = await trio.to_thread.run_sync(_load_signing_key, config)
    db = await trio.to_thread.run_sync(_open_database, config, budget)
    notifier = Notifier(await db.read(max_stream_ordering))
    room_store = RoomStore(db, budget)
    reader = EventReader(room_store, budget)
    appservices = AppServices(config.app_services, db, config.server_name)
    if appservices.all:
        await appservices.ensure_senders()
    ratelimits = RateLimiters.from_config(
        config, exempt=appservices.is_unlimited if appservices.all else None
    )
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
    account_data = await AccountDataService.open(db, notifier, budget)
    sync = SyncHandler(
        room_store, reader, notifier, budget, ignored_users=account_data.ignored_users
    )
    sync.add_source(AccountDataSource(account_data))
    device_lists = await DeviceListStream.open(db, notifier)
    accounts.tokens_revoked_listeners.append(device_lists.poke)
    accounts.device_list_listeners.append(device_lists.committed)
    federation_client = LazyFederationClient(config, signing_key)
    federation_sender = FederationSender(
        db,
        room_store,
        config.server_name,
        ClientTransport(federation_client),
        budget=budget,
        presence_enabled=config.presence_enabled,
    )
    writer.add_listener(federation_sender.on_persisted)

    async def to_device_out(
        sender: str, event_type: str, destination: str, messages: RemoteMessages
    ) -> None:
        await federation_sender.send_to_device(sender, event_type, messages)

    to_device = await ToDeviceService.open(db, notifier, config.server_name, remote=to_device_out)
    sync.add_source(ToDeviceSource(to_device))
    e2e_keys, federation_e2e = FederationE2e.build(
        db,
        device_lists,
        config.server_name,
        to_device,
        federation_requests if federation_requests is not None else federation_client,
        display_names=config.allow_device_name_lookup_over_federation,
    )
    writer.add_listener(federation_e2e.lists.on_persisted)
    publisher = DeviceListPublisher(
        db,
        device_lists,
        device_list_sender if device_list_sender is not None else federation_sender,
        display_names=config.allow_device_name_lookup_over_federation,
    )
    on_join = None
    if device_list_sender is None:
        on_join = DeviceListsOnJoin(
            room_store,
            federation_sender,
            config.server_name,
            display_names=config.allow_device_name_lookup_over_federation,
        )
        writer.add_listener(on_join.on_persisted)
    device_list_source = DeviceListSource(e2e_keys)
    sync.add_source(device_list_source)
    accounts.tokens_revoked_listeners.append(device_list_source.forget_key_counts)
    presence = PresenceService(db, notifier, enabled=config.presence_enabled)
    # Sending events, typing and receipts count as presence activity.
    locality = Locality(config.server_name)

    def typing_out(user_id: str, room_id: str, typing: bool) -> None:
        if locality.is_mine(user_id):  # other servers' users: their server tells the room
            federation_sender.send_typing(room_id, user_id, typing)

    typing = TypingService(
        room_client.require_joined,
        notifier,
        activity=presence.bump_active,
        on_change=typing_out,
    )
    receipts = ReceiptService(
        room_client,
        notifier,
        await db.read(receipt_store.stream_position),
        activity=presence.bump_active,
        read_markers=account_data,
    )
    writer.add_listener(partial(_stop_typing_on_leave, typing))
    presence_out = None
    if presence.enabled:
        writer.add_listener(partial(_bump_local_sender, presence, ":" + config.server_name))
        presence_out = PresenceOut(presence, room_store, federation_sender, config.server_name)
        presence.add_listener(presence_out.on_presence)
        writer.add_listener(presence_out.on_persisted)
    for source in (typing, receipts, presence):
        sync.add_source(source)
    media, remote_media, url_previews = await build_media(db, config, budget, federation_client)
    directory = Directory(
        room_store,
        config.server_name,
        ask_unknown_alias=appservices.query_alias if appservices.all else None,
    )
    legacy_sync = LegacySync(
        room_client,
        notifier,
        directory,
        presence,
        (AccountDataSource(account_data), receipts, typing, presence),
        account_data.ignored_users,
    )
    push = PushService(
        room_store, reader, notifier, budget, config.server_name, account_data=account_data
    )
    sync.add_finisher(push.add_to_sync)
    receipts.add_listener(push.evaluator.on_receipt)
    upgrade_transfer = UpgradeTransfer(account_data, push.rules).transfer
    upgrader = RoomUpgrader(room_client, directory, after_upgrade=upgrade_transfer)
    upgrade_follower = UpgradeFollower(room_store, directory, config.server_name, upgrade_transfer)
    writer.add_listener(upgrade_follower.on_persisted)
    appservice_sender = TransactionSender(appservices, db, reader)
    writer.add_listener(appservice_sender.on_persisted)
    writer.add_listener(push.evaluator.on_event)
    outbound = outbound_policy(config.ip_range_blacklist, config.ip_range_whitelist)
    pushers = PusherService(db, reader, policy=outbound)
    push.evaluator.notification_listeners.append(pushers.delivery.on_notifications)
    push.evaluator.read_listeners.append(pushers.delivery.on_read)
    receipts.add_listener(receipt_forwarder(federation_sender, config.server_name))
    guests = GuestAccess(db, accounts, room_client, enabled=config.allow_guest_access)
    writer.add_listener(guests.on_persisted)
    if config.use_insecure_ssl_client_just_for_testing_do_not_use:
        log.warning(
            "use_insecure_ssl_client_just_for_testing_do_not_use is set: identity server"
            " certificates are NOT verified"
        )
    remote_profiles = RemoteProfiles(federation_client, budget)
    writer.add_listener(partial(_forget_remote_profile, remote_profiles, locality))
    profiles = Profiles(room_client, config.server_name, remote_profiles)
    keyring = Keyring(
        db,
        budget,
        config.server_name,
        signing_key,
        federation_client,
        old_signing_keys=config.old_signing_keys,
        trusted_key_servers=config.trusted_key_servers,
    )
    federation_history = FederationHistory(room_store, reader)

    async def keys_for(pdu: Mapping[str, object], room_version: str) -> event_keys.Keys:
        return await event_keys.keys_for_event(keyring, pdu, room_version)

    out_of_band = OutOfBandMemberships(room_store, notifier, [push.evaluator.on_event])
    remote_memberships = RemoteMemberships(
        federation_client,
        out_of_band,
        config.server_name,
        signing_key,
        keys_for,
        keyring.verify_json,
    )
    third_party_invites = ThirdPartyInvites(
        room_client,
        IdentityClient(
            outbound,
            verify_tls=not config.use_insecure_ssl_client_just_for_testing_do_not_use,
        ),
        config.server_name,
        lookups_enabled=config.enable_3pid_lookup,
        forward=ThirdPartyForwarder(federation_client).forward,
        remote_sign=remote_memberships.sign_invite,
    )
    partial_state = PartialStateResync(writer, keyring, federation_client, config.server_name)
    sync.set_full_state_wait(partial_state.wait_full_state)
    membership = Membership(
        room_client,
        directory,
        profiles,
        guests,
        third_party_invites,
        appservices,
        Locality(config.server_name),
        remote_memberships,
        out_of_band,
        remote_alias=partial(query_remote_alias, federation_client),
        remote_joins=RemoteJoins(
            writer, keyring, federation_client, config.server_name, signing_key, partial_state
        ),
        after_remote_join=upgrade_follower.after_remote_join,
    )
    room_creator = RoomCreator(
        writer,
        membership,
        directory,
        profiles,
        third_party_invites,
        appservices,
        ratelimits.rooms,
        config.default_room_version,
    )
    resident_memberships = ResidentMemberships(
        writer, federation_history, config.server_name, signing_key, keys_for
    )
    invites = InviteReceiver(
        writer,
        federation_history,
        out_of_band,
        config.server_name,
        signing_key,
        keys_for,
        partial(_user_active, db),
        ratelimits.rooms,
    )
    ephemeral_edus = EphemeralEdus(typing, receipts, presence, federation_history.check_acl)
    transactions = TransactionReceiver(
        room_store,
        federation_history,
        [ephemeral_edus.handle, federation_e2e.on_edu],
        on_contact=federation_sender.on_remote_contact,
    )
    policy_signing = PolicySigning(
        federation_client, room_store, config.server_name, timeout_s=SIGN_TIMEOUT_S
    )
    writer.set_policy_signer(policy_signing.sign_local, policy_signing.resign_remote)
    pipeline = PduPipeline(writer, keyring, federation_client)
    staged_pdus = StagedPduWorker(transactions, pipeline)
    return Services(
        config=config,
        db=db,
        budget=budget,
        signing_key=signing_key,
        accounts=accounts,
        guests=guests,
        registration_nonces=NonceStore(),
        ratelimits=ratelimits,
        notifier=notifier,
        room_store=room_store,
        rooms=writer,
        events=reader,
        censor=RedactionCensor(reader, config.redaction_retention_period_ms),
        auth_index=AuthChainIndexer(db),
        room_client=room_client,
        directory=directory,
        profiles=profiles,
        filters=StoredFilters(db, sync.filters),
        sync=sync,
        typing=typing,
        receipts=receipts,
        presence=presence,
        account_api=account_api,
        account_data=account_data,
        push=push,
        pushers=pushers,
        room_upgrades=upgrader,
        upgrade_follower=upgrade_follower,
        media=media,
        remote_media=remote_media,
        openid=OpenIdTokens(db, config.server_name),
        third_party_invites=third_party_invites,
        membership=membership,
        room_creator=room_creator,
        reports=Reports(room_client, ratelimits.message, Locality(config.server_name)),
        url_previews=url_previews,
        to_device=to_device,
        key_backup=KeyBackupService(db),
        e2e_keys=e2e_keys,
        federation_e2e=federation_e2e,
        device_list_publisher=publisher,
        device_lists_on_join=on_join,
        presence_out=presence_out,
        cross_signing=CrossSigning(db, device_lists),
        dehydrated=DehydratedDevices(e2e_keys, to_device, accounts),
        legacy_sync=legacy_sync,
        appservices=appservices,
        appservice_sender=appservice_sender,
        thirdparty=ThirdParty(appservices),
        keyring=keyring,
        federation_client=federation_client,
        remote_directory=RemoteRoomDirectory(federation_client),
        space_hierarchy=SpaceHierarchy(
            room_store,
            reader,
            config.server_name,
            RemoteHierarchy(federation_client, budget),
        ),
        federation_sender=federation_sender,
        federation_history=federation_history,
        resident_memberships=resident_memberships,
        invites=invites,
        transactions=transactions,
        staged_pdus=staged_pdus,
        partial_state=partial_state,
        remote_backfill=RemoteBackfill(pipeline, federation_client, config.server_name),
    )
