"""Third-party networks (client-server API "Third-party Networks"): the questions are
forwarded to the application services that bridge each protocol
(``/_matrix/app/v1/thirdparty/...``), and their answers merged as Synapse does.

A protocol's metadata is cached for a few minutes per service (bounded by the
registrations: services times protocols), as Synapse's; lookups are not cached.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import trio

from pocketserver.appservice.client import QUERY_TIMEOUT_S, app_path
from pocketserver.appservice.registration import AppService
from pocketserver.appservice.service import AppServices

METADATA_TTL_S = 300.0
MAX_RESULTS = 1000


def _valid_metadata(body: object) -> bool:
    return isinstance(body, Mapping) and isinstance(body.get("instances"), list)


def _valid_result(entry: object, id_field: str, protocol: str | None) -> bool:
    """An entry of a user or location lookup: its ID, a fields object, the protocol."""
    if not isinstance(entry, Mapping):
        return False
    if not isinstance(entry.get(id_field), str) or not isinstance(entry.get("fields"), Mapping):
        return False
    return protocol is None or entry.get("protocol") == protocol


class ThirdParty:
    def __init__(self, appservices: AppServices) -> None:
        self._appservices = appservices
        # (service ID, protocol) -> (fetched at, metadata)
        self._metadata: dict[tuple[str, str], tuple[float, dict[str, object]]] = {}

    def protocols(self) -> list[str]:
        names = {p for s in self._appservices.all for p in s.protocols}
        return sorted(names)

    def _bridging(self, protocol: str) -> list[AppService]:
        return [s for s in self._appservices.all if protocol in s.protocols and s.url]

    async def _service_metadata(
        self, service: AppService, protocol: str
    ) -> dict[str, object] | None:
        key = (service.id, protocol)
        now = trio.current_time()
        cached = self._metadata.get(key)
        if cached is not None and now - cached[0] < METADATA_TTL_S:
            return copy.deepcopy(cached[1])
        answer = await self._appservices.client.request(
            service, "GET", app_path("thirdparty", "protocol", protocol), timeout_s=QUERY_TIMEOUT_S
        )
        if not answer.ok or not _valid_metadata(answer.body):
            return None
        assert isinstance(answer.body, dict)
        body: dict[str, object] = answer.body
        instances = body.get("instances")
        assert isinstance(instances, list)
        for instance in instances:
            if isinstance(instance, dict) and isinstance(instance.get("network_id"), str):
                # As Synapse: the ID that /publicRooms' third_party_instance_id takes.
                instance["instance_id"] = f"{service.id}|{instance['network_id']}"
        self._metadata[key] = (now, body)
        return copy.deepcopy(body)

    async def protocol(self, protocol: str) -> dict[str, object] | None:
        """The metadata of one protocol: the first service's answer with the instances
        of every service that bridges it; None if none answered."""
        merged: dict[str, object] | None = None
        for service in self._bridging(protocol):
            info = await self._service_metadata(service, protocol)
            if info is None:
                continue
            if merged is None:
                merged = info
                continue
            instances = merged.get("instances")
            more = info.get("instances")
            if isinstance(instances, list) and isinstance(more, list):
                instances.extend(more)
        return merged

    async def all_protocols(self) -> dict[str, object]:
        found: dict[str, object] = {}
        for name in self.protocols():
            info = await self.protocol(name)
            if info is not None:
                found[name] = info
        return found

    async def lookup(
        self, kind: str, protocol: str | None, fields: Sequence[tuple[str, str]]
    ) -> list[object]:
        """``kind`` ``user`` or ``location``: the services' answers, concatenated (each
        service's answer checked; a service that fails adds nothing)."""
        id_field = "userid" if kind == "user" else "alias"
        if protocol is None:
            services = [s for s in self._appservices.all if s.url]
            path = app_path("thirdparty", kind)
        else:
            services = self._bridging(protocol)
            path = app_path("thirdparty", kind, protocol)
        results: list[object] = []
        for service in services:
            answer = await self._appservices.client.request(
                service, "GET", path, params=fields, timeout_s=QUERY_TIMEOUT_S
            )
            if answer.ok and isinstance(answer.body, list):
                results.extend(e for e in answer.body if _valid_result(e, id_field, protocol))
        return results[:MAX_RESULTS]
