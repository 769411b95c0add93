"""The services of one running server, built once by ``server.py``.

Handed to ``create_app(services)``: no globals, no service locator.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nacl.signing

from pocketserver.account_data.service import AccountDataService
from pocketserver.accounts.account_api import AccountApi
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
from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.e2e.dehydrated import DehydratedDevices
from pocketserver.e2e.keys import E2eKeys
from pocketserver.ephemeral.presence import PresenceService
from pocketserver.ephemeral.receipts import ReceiptService
from pocketserver.ephemeral.typing_notices import TypingService
from pocketserver.key_backup.service import KeyBackupService
from pocketserver.media.repository import MediaRepository
from pocketserver.push.pushers import PusherService
from pocketserver.push.service import PushService
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.rooms.directory import Directory
from pocketserver.rooms.limits import RoomActionLimits
from pocketserver.rooms.reading import EventReader
from pocketserver.rooms.retention import RedactionCensor
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.third_party_invites import ThirdPartyInvites
from pocketserver.rooms.upgrade import RoomUpgrader
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database
from pocketserver.streams.notifier import Notifier
from pocketserver.sync.handler import SyncHandler
from pocketserver.sync.legacy import LegacySync
from pocketserver.to_device.service import ToDeviceService

if TYPE_CHECKING:  # the previewer (and httpx) is imported only when previews are on
    from pocketserver.media.preview import UrlPreviewer


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
    def from_config(cls, config: Config) -> RateLimiters:
        return cls(
            login_address=RateLimiter(config.rc_login.address),
            login_account=RateLimiter(config.rc_login.account),
            login_failures=RateLimiter(config.rc_login.failed_attempts),
            registration=RateLimiter(config.rc_registration),
            message=RateLimiter(config.rc_message),
            rooms=RoomActionLimits(config.rate_limits),
            media_create=RateLimiter(config.rate_limits.media_create),
            presence=RateLimiter(config.rate_limits.presence_per_user),
            presence_sync=RateLimiter(config.rate_limits.presence_per_user),
        )

    def exempt_users(self, exempt: Callable[[Hashable], bool]) -> None:
        """Never limit the users ``exempt`` names in the limiters keyed by user ID
        (application services' users with ``rate_limited: false``)."""
        rooms = self.rooms
        for limiter in (
            self.message,
            self.media_create,
            self.presence,
            self.presence_sync,
            rooms.joins_local,
            rooms.invites_per_issuer,
            rooms.room_creation,
        ):
            limiter.exempt = exempt


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
    room_client: RoomClient
    directory: Directory
    profiles: Profiles
    sync: SyncHandler
    typing: TypingService
    receipts: ReceiptService
    presence: PresenceService
    account_api: AccountApi
    account_data: AccountDataService
    push: PushService
    pushers: PusherService
    room_upgrades: RoomUpgrader
    to_device: ToDeviceService
    key_backup: KeyBackupService
    e2e_keys: E2eKeys
    cross_signing: CrossSigning
    dehydrated: DehydratedDevices
    media: MediaRepository
    legacy_sync: LegacySync
    openid: OpenIdTokens
    appservices: AppServices
    appservice_sender: TransactionSender
    thirdparty: ThirdParty
    third_party_invites: ThirdPartyInvites
    url_previews: UrlPreviewer | None = None
