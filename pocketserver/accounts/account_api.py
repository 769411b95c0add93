"""The services behind the account API, built together: UIA, registration tokens,
refresh tokens, login tokens, devices and account management."""

from __future__ import annotations

from dataclasses import dataclass

from pocketserver.accounts.devices import DeviceActivity, DeviceManager
from pocketserver.accounts.login_tokens import LoginTokens
from pocketserver.accounts.management import AccountManagement
from pocketserver.accounts.refresh import RefreshTokens
from pocketserver.accounts.registration_tokens import RegistrationTokens
from pocketserver.accounts.service import AccountService
from pocketserver.accounts.uia import UserInteractiveAuth
from pocketserver.config.model import RateLimit
from pocketserver.ratelimit import RateLimiter
from pocketserver.rooms.client import RoomClient
from pocketserver.storage.db import Database

AVAILABILITY_LIMIT = RateLimit(per_second=1.0, burst_count=10)
"""``/register/available``, per client address: a client checks as its user types."""


@dataclass(frozen=True, slots=True)
class AccountApi:
    uia: UserInteractiveAuth
    registration_tokens: RegistrationTokens
    refresh: RefreshTokens
    devices: DeviceManager
    management: AccountManagement
    token_validity_limit: RateLimiter
    availability_limit: RateLimiter
    login_tokens: LoginTokens | None = None
    """None unless ``login_via_existing_session`` is enabled."""


def build_account_api(
    db: Database,
    accounts: AccountService,
    rooms: RoomClient,
    *,
    access_lifetime_ms: int,
    refresh_lifetime_ms: int | None,
    failed_logins: RateLimiter,
    token_validity: RateLimit,
    login_token_lifetime_ms: int | None = None,
) -> AccountApi:
    uia = UserInteractiveAuth()
    devices = DeviceManager(db, accounts, DeviceActivity(db))
    return AccountApi(
        uia=uia,
        registration_tokens=RegistrationTokens(db, uia),
        refresh=RefreshTokens(db, accounts, access_lifetime_ms, refresh_lifetime_ms),
        devices=devices,
        management=AccountManagement(db, accounts, devices, rooms, failed_logins),
        token_validity_limit=RateLimiter(token_validity),
        availability_limit=RateLimiter(AVAILABILITY_LIMIT),
        login_tokens=None
        if login_token_lifetime_ms is None
        else LoginTokens(login_token_lifetime_ms),
    )
