"""The application services of this server: who a request with an ``as_token`` acts
as, which namespaces are claimed, and the queries the server asks of a service
(application service API, "Client-Server API Extensions", "Querying")."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Hashable, Sequence

from pocketserver.accounts.service import Requester
from pocketserver.appservice.client import QUERY_TIMEOUT_S, AppServiceClient, app_path
from pocketserver.appservice.registration import AppService
from pocketserver.core.locality import Locality
from pocketserver.errors import MatrixError, forbidden
from pocketserver.storage import appservice as appservice_store
from pocketserver.storage import devices as device_store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database

log = logging.getLogger(__name__)


class AppServices:
    """The registrations, looked up by token, user and alias."""

    def __init__(
        self,
        registrations: Sequence[AppService],
        db: Database,
        server_name: str,
        client: AppServiceClient | None = None,
    ) -> None:
        self.all = tuple(registrations)
        self._db = db
        self.server_name = server_name
        self.locality = Locality(server_name)
        self.client = client or AppServiceClient()
        self._by_token = {s.as_token: s for s in self.all}
        self._by_id = {s.id: s for s in self.all}

    # --- lookups ---------------------------------------------------------------------

    def by_token(self, token: str) -> AppService | None:
        """The service whose ``as_token`` this is, if any."""
        found = self._by_token.get(token)
        if found is not None and hmac.compare_digest(found.as_token, token):
            return found
        return None

    def by_id(self, service_id: str) -> AppService | None:
        return self._by_id.get(service_id)

    def exclusive_owner_of_user(self, user_id: str) -> AppService | None:
        """The service that claims the user ID exclusively, if one does."""
        return next((s for s in self.all if s.claims_user_exclusively(user_id)), None)

    def exclusive_owner_of_alias(self, alias: str) -> AppService | None:
        return next((s for s in self.all if s.claims_alias_exclusively(alias)), None)

    def is_unlimited(self, key: Hashable) -> bool:
        """Whether ``key`` is a user of a service with ``rate_limited: false`` (for
        the rate limiters keyed by user ID)."""
        return isinstance(key, str) and any(
            not s.rate_limited and s.is_interested_in_user(key) for s in self.all
        )

    def check_user_allowed(self, user_id: str, service: AppService | None) -> None:
        """A new account or login for ``user_id``, by ``service`` (None: a normal user).

        Application service API, "Server admin style permissions": a service may
        create only users in its namespaces, and no one else may create a user in
        an exclusive namespace.

        Raises:
            MatrixError: 400 ``M_EXCLUSIVE``.
        """
        if service is not None:
            if not service.is_interested_in_user(user_id):
                raise MatrixError(
                    400, "M_EXCLUSIVE", "this user ID is not in the application service's namespace"
                )
            return
        owner = self.exclusive_owner_of_user(user_id)
        if owner is not None:
            raise MatrixError(
                400, "M_EXCLUSIVE", "this user ID is reserved by an application service"
            )

    def check_alias_allowed(self, alias: str, service: AppService | None) -> None:
        """A new alias, by ``service`` (None: a normal user): as for users, and as
        Synapse's directory handler, a service only in its alias namespaces.

        Raises:
            MatrixError: 400 ``M_EXCLUSIVE``.
        """
        if service is not None:
            if not service.is_interested_in_alias(alias):
                raise MatrixError(
                    400, "M_EXCLUSIVE", "this alias is not in the application service's namespace"
                )
            return
        owner = self.exclusive_owner_of_alias(alias)
        if owner is not None:
            raise MatrixError(
                400, "M_EXCLUSIVE", "this room alias is reserved by an application service"
            )

    # --- authentication --------------------------------------------------------------

    async def requester(
        self, service: AppService, user_id: str | None, device_id: str | None
    ) -> Requester:
        """Who a request made with ``service``'s ``as_token`` acts as: the ``user_id``
        query parameter (in the service's user namespaces, and registered) or else
        the service's sender; ``device_id`` (or MSC3202's name for it) when given must
        be a device of that user (application service API, "Identity assertion").

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` for a user outside the namespaces or not
                registered; 400 ``M_UNKNOWN_DEVICE`` for a device the user hasn't.
        """
        target = user_id or service.sender
        if target != service.sender:
            local = target.startswith("@") and self.locality.is_mine(target)
            if not local or not service.is_interested_in_user(target):
                raise forbidden("the application service cannot masquerade as this user")
        user = await self._db.read(user_store.get_user, target)
        if user is None and target != service.sender:
            raise forbidden("the application service has not registered this user")
        device = ""
        if device_id:
            if not await self._db.read(device_store.device_exists, target, device_id):
                raise MatrixError(400, "M_UNKNOWN_DEVICE", "no such device for this user")
            device = device_id
        is_admin = user is not None and user.admin
        return Requester(target, device, app_service=service.id, is_admin=is_admin)

    async def set_listed(
        self, service: AppService, network_id: str, room_id: str, listed: bool
    ) -> None:
        """Publish ``room_id`` in (or remove it from) the room list of ``service``'s
        network ``network_id`` (appservice_room_directory.yaml)."""
        await self._db.write(appservice_store.set_listed, service.id, network_id, room_id, listed)

    async def ensure_senders(self) -> None:
        """Create the account of every service's sender if it does not exist yet (the
        sender acts without registering, and joins rooms with a profile)."""
        now = int(time.time())
        for service in self.all:
            if await self._db.write(user_store.insert_user, service.sender, None, now):
                log.info(
                    "created the account of application service %s: %s", service.id, service.sender
                )

    # --- queries ---------------------------------------------------------------------

    async def query_user(self, user_id: str) -> bool:
        """Ask the service that claims ``user_id`` exclusively whether it exists
        (``GET /_matrix/app/v1/users/{userId}``), which lets it create the user.
        True if the service answered 200."""
        owner = self.exclusive_owner_of_user(user_id)
        if owner is None or owner.url is None:
            return False
        answer = await self.client.request(
            owner, "GET", app_path("users", user_id), timeout_s=QUERY_TIMEOUT_S
        )
        return answer.ok

    async def ensure_user_known(self, user_id: str) -> None:
        """Before inviting or looking up a local user who has no account: the service
        that claims the ID exclusively may create it now (as Synapse's
        ``query_user_exists``)."""
        if not self.locality.is_mine(user_id) or self.exclusive_owner_of_user(user_id) is None:
            return
        if await self._db.read(user_store.get_user, user_id) is None:
            await self.query_user(user_id)

    async def query_alias(self, alias: str) -> bool:
        """Ask the services whose alias namespaces hold ``alias``
        (``GET /_matrix/app/v1/rooms/{roomAlias}``); True once one answered 200."""
        for service in self.all:
            if service.url is None or not service.is_interested_in_alias(alias):
                continue
            answer = await self.client.request(
                service, "GET", app_path("rooms", alias), timeout_s=QUERY_TIMEOUT_S
            )
            if answer.ok:
                return True
        return False
