"""Profiles of other servers' users: ``GET /_matrix/federation/v1/query/profile``
(server-server query.yaml), asked when a client reads such a user's profile.

Answers are cached briefly (``TTL_S``) in a byte-bounded cache from the memory budget,
so a client that renders a member list does not ask the same server once per render.
A member event of the user (their server sends one when they change their name or
avatar) drops the cached answer at once. Synapse caches nothing here and asks every
time; a short cache is kinder to a small host and to the peer, and stays fresh enough.
A "no such user" (404) is cached too; failures are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pocketserver.cache import MemoryBudget
from pocketserver.core.identifiers import is_valid_user_id
from pocketserver.core.locality import server_of
from pocketserver.errors import not_found
from pocketserver.federation.answer_cache import AnswerCache
from pocketserver.federation.errors import FederationError
from pocketserver.federation.remote_errors import bad_gateway, remote_failure
from pocketserver.federation.requests import JsonRequests

log = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/query/profile"
TTL_S = 60.0
CACHE_SHARE = 0.005
TIMEOUT_S = 10.0
MAX_ANSWER = 128 * 1024
"""A profile is small (MSC4133 caps custom fields at 64 KiB in all)."""
FAILED = "Failed to fetch profile"


class RemoteProfiles:
    """Reads, and briefly remembers, the profiles of users of other servers."""

    def __init__(
        self,
        requests: JsonRequests,
        budget: MemoryBudget,
        *,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._requests = requests
        kwargs = {"clock": clock} if clock is not None else {}
        self._cache: AnswerCache[str, dict[str, object] | None] = AnswerCache(
            budget, "remote_profiles", CACHE_SHARE, ttl_s, **kwargs
        )

    @property
    def cache(self) -> AnswerCache[str, dict[str, object] | None]:
        return self._cache

    async def get(self, user_id: str) -> dict[str, object]:
        """The whole profile ``user_id``'s server gives.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (no such user there), 403 ``M_FORBIDDEN``
                (that server, or federation with it, refuses), 502 ``M_UNKNOWN`` (it
                could not be asked, or answered nonsense); see remote_errors.py.
        """
        hit, cached = self._cache.lookup(user_id)
        if hit:
            if cached is None:  # a cached "no such user"
                raise not_found("Profile was not found")
            return dict(cached)
        destination = server_of(user_id)
        if destination is None or not is_valid_user_id(user_id):
            raise not_found("no such user")
        try:
            answer = await self._requests.get_json(
                destination,
                PATH,
                query={"user_id": user_id},
                timeout_s=TIMEOUT_S,
                max_size=MAX_ANSWER,
            )
        except FederationError as e:
            log.info("profile of %s: %s", user_id, e)
            error = remote_failure(e, FAILED)
            if error.status == 404:
                self._cache.set(user_id, None)
            raise error from None
        if not isinstance(answer, dict):
            raise bad_gateway(FAILED)
        profile = {k: v for k, v in answer.items() if isinstance(k, str)}
        self._cache.set(user_id, profile)
        return dict(profile)

    def forget(self, user_id: str) -> None:
        """Drop what is cached of ``user_id`` (their profile changed)."""
        self._cache.pop(user_id)

    def on_member_event(self, pdu: Mapping[str, object]) -> None:
        """A writer listener's half: a member event of a remote user means their name or
        avatar may have changed."""
        if pdu.get("type") == "m.room.member":
            target = pdu.get("state_key")
            if isinstance(target, str):
                self.forget(target)
