"""The answering side of ``PUT /exchange_third_party_invite/{roomId}`` in process
(federation/third_party_exchange.py over the real services): what another server may
not make us do. The whole exchange between two servers is in test_pocket_pair_rooms.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pocketserver.config import load_config
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationHttpError, FederationUnreachable
from pocketserver.federation.third_party_exchange import ThirdPartyForwarder, receive_exchange
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.services import build_services
from pocketserver.storage import users as user_store
from tests.harness import make_config

US = "local.test"
ALICE = f"@alice:{US}"
RBOB = "@bob:remote.test"
TPI = "m.room.third_party_invite"


@pytest.fixture
async def services(tmp_path: Path):
    services = await build_services(load_config(make_config(tmp_path, server_name=US)))
    services.db.write_sync(user_store.insert_user, ALICE, None, 0)
    yield services
    services.db.close()


def _event(room_id: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "room_id": room_id,
        "sender": ALICE,
        "state_key": RBOB,
        "content": {
            "membership": "invite",
            "third_party_invite": {"signed": {"mxid": RBOB, "token": "tok", "signatures": {}}},
        },
    }
    event.update(changes)
    return event


async def _refused(services, origin: str, room_id: str, event: dict[str, Any]) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        await receive_exchange(services.third_party_invites, origin, room_id, event)
    return e.value


async def test_only_the_invitees_server_may_exchange_and_only_a_well_formed_invite(
    services,
) -> None:
    room_id = await create_room(
        services.rooms, ALICE, RoomSettings(room_version="10", preset="private_chat")
    )
    await services.rooms.send_event(
        room_id, ALICE, TPI, {"display_name": "b...", "public_key": "AAAA"}, "tok"
    )
    before = await services.room_store.current_state_ids(room_id)
    e = await _refused(services, "evil.test", room_id, _event(room_id))
    assert (e.status, e.errcode) == (403, "M_FORBIDDEN")
    for bad in (
        _event("!other:local.test"),
        _event(room_id, type="m.room.message"),
        _event(room_id, state_key="not a user"),
        _event(room_id, sender=None),
        _event(room_id, content={"membership": "join"}),
        _event(room_id, content={"membership": "invite", "third_party_invite": {}}),
    ):
        e = await _refused(services, "remote.test", room_id, bad)
        assert (e.status, e.errcode) == (400, "M_BAD_JSON"), bad
    # The invitee's server, but a signed block that no key of the invite signs.
    e = await _refused(services, "remote.test", room_id, _event(room_id))
    assert (e.status, e.errcode) == (403, "M_FORBIDDEN")
    # An inviter who is not the one who sent the third-party invite.
    e = await _refused(services, "remote.test", room_id, _event(room_id, sender=f"@eve:{US}"))
    assert (e.status, e.errcode) == (403, "M_FORBIDDEN")
    assert await services.room_store.current_state_ids(room_id) == before


async def test_a_room_we_are_not_in_is_not_passed_on(services) -> None:
    """A forwarded exchange is never forwarded again: 404, and no request is made."""
    room_id = "!elsewhere:third.test"
    e = await _refused(
        services, "remote.test", room_id, _event(room_id, sender="@carol:third.test")
    )
    assert (e.status, e.errcode) == (404, "M_NOT_FOUND")


class _Peers:
    def __init__(self, answers: dict[str, Exception | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def put_json(self, destination: str, path: str, content: object, **kwargs: Any) -> Any:
        self.asked.append(destination)
        answer = self.answers[destination]
        if answer is not None:
            raise answer
        return {}


async def test_forwarding_tries_the_next_server_past_failures_not_past_refusals() -> None:
    down = FederationUnreachable("a.test", "refused")
    failing = FederationHttpError("b.test", 502, None, None, None)
    refusing = FederationHttpError("c.test", 403, "M_FORBIDDEN", "no", None)
    peers = _Peers({"a.test": down, "b.test": failing, "c.test": None})
    await ThirdPartyForwarder(peers).forward(["a.test", "b.test", "c.test"], "!r:a.test", {})
    assert peers.asked == ["a.test", "b.test", "c.test"]
    peers = _Peers({"a.test": refusing, "c.test": None})
    with pytest.raises(MatrixError) as e:
        await ThirdPartyForwarder(peers).forward(["a.test", "c.test"], "!r:a.test", {})
    assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")
    assert peers.asked == ["a.test"]
    peers = _Peers({"a.test": down})
    with pytest.raises(MatrixError) as e:
        await ThirdPartyForwarder(peers).forward(["a.test"], "!r:a.test", {})
    assert e.value.status == 502
