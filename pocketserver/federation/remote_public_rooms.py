"""Another server's room directory for ``/publicRooms?server=...``: ``GET`` or ``POST
/_matrix/federation/v1/publicRooms`` there (server-server public_rooms.yaml).

As Synapse (handlers/room_list.py ``get_remote_public_room_list``): a request with a
search filter is POSTed (MSC2197, now in the spec); a server that does not know the
POST (404/405, ``M_UNRECOGNIZED``, ``M_NOT_FOUND``) is asked with GET instead, one page
without pagination, and filtered here by the search term over name, topic and
canonical alias. A 403 (the server does not publish its directory over federation) is
passed on as 403 ``M_FORBIDDEN``; any other failure is 502 (remote_errors.py).

Answers are passed on as the remote gave them, after checking their shape; their size
is capped (``MAX_ANSWER``), and the number of rooms asked for too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationError, FederationHttpError
from pocketserver.federation.remote_errors import bad_gateway, remote_failure
from pocketserver.federation.requests import JsonRequests

log = logging.getLogger(__name__)

PATH = "/_matrix/federation/v1/publicRooms"
TIMEOUT_S = 30.0
MAX_ANSWER = 4 * 1024 * 1024
MAX_LIMIT = 500
"""The most rooms asked for in one page (the same cap as our own listing)."""
FALLBACK_LIMIT = 500
"""The rooms fetched for a search the remote cannot do itself (filtered here)."""
FAILED = "Failed to fetch room list"


@dataclass(frozen=True, slots=True)
class RemoteListing:
    """What the client asked for, as the remote server is asked it."""

    limit: int | None = None
    since: str | None = None
    search_filter: Mapping[str, object] | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


def _unknown_endpoint(e: FederationHttpError) -> bool:
    """Synapse's test for "this server does not do the POST" (MSC2197 fallback)."""
    return e.status in (404, 405) or e.errcode in ("M_UNRECOGNIZED", "M_NOT_FOUND")


def _matches(entry: Mapping[str, object], term: str) -> bool:
    """Synapse's ``_matches_room_entry``: the term in name, topic or canonical alias."""
    wanted = term.upper()
    for key in ("name", "topic", "canonical_alias"):
        value = entry.get(key)
        if isinstance(value, str) and wanted in value.upper():
            return True
    return False


def _checked(destination: str, answer: object) -> dict[str, object]:
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        log.info("room directory of %s: not a PublicRoomsResponse", destination)
        raise bad_gateway(FAILED)
    answer["chunk"] = [entry for entry in answer["chunk"] if isinstance(entry, dict)]
    return answer


class RemoteRoomDirectory:
    def __init__(self, requests: JsonRequests) -> None:
        self._requests = requests

    async def list(self, server: str, want: RemoteListing) -> dict[str, object]:
        """One page of ``server``'s directory.

        Raises:
            MatrixError: 403 ``M_FORBIDDEN`` if the server refuses (or federation with
                it is not allowed), else 502 ``M_UNKNOWN`` when it cannot be had.
        """
        limit = min(want.limit, MAX_LIMIT) if want.limit else None
        term = want.search_filter.get("generic_search_term") if want.search_filter else None
        if want.search_filter:
            body: dict[str, object] = {
                "include_all_networks": want.include_all_networks,
                "filter": dict(want.search_filter),
            }
            if want.third_party_instance_id:
                body["third_party_instance_id"] = want.third_party_instance_id
            if limit:
                body["limit"] = limit
            if want.since:
                body["since"] = want.since
            try:
                answer = await self._requests.post_json(
                    server, PATH, body, timeout_s=TIMEOUT_S, max_size=MAX_ANSWER
                )
                return _checked(server, answer)
            except FederationHttpError as e:
                if not _unknown_endpoint(e):
                    raise self._failure(e) from None
                log.info("room directory of %s: no search over federation, filtering here", server)
            except FederationError as e:
                raise self._failure(e) from None
            limit, since = FALLBACK_LIMIT, None
        else:
            since = want.since
        query = {"include_all_networks": "true" if want.include_all_networks else "false"}
        if want.third_party_instance_id:
            query["third_party_instance_id"] = want.third_party_instance_id
        if limit:
            query["limit"] = str(limit)
        if since:
            query["since"] = since
        try:
            answer = await self._requests.get_json(
                server, PATH, query=query, timeout_s=TIMEOUT_S, max_size=MAX_ANSWER
            )
        except FederationError as e:
            raise self._failure(e) from None
        listing = _checked(server, answer)
        if want.search_filter:
            chunk = listing["chunk"]
            assert isinstance(chunk, list)
            if isinstance(term, str) and term:
                chunk = [entry for entry in chunk if _matches(entry, term)]
            return {"chunk": chunk}
        return listing

    @staticmethod
    def _failure(e: FederationError) -> MatrixError:
        log.info("room directory: %s", e)
        error = remote_failure(e, FAILED)
        if error.status == 403:
            return MatrixError(
                403,
                "M_FORBIDDEN",
                f"You are not allowed to view the public rooms list of {e.destination}",
            )
        return bad_gateway(FAILED)
