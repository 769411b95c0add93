"""What a room upgrade carries over for each local member of the old room, as Synapse
(``RoomMemberHandler.transfer_room_state_on_room_upgrade``) does: the room's place in
``m.direct``, its tags, and push rules that name the room (a ``room`` rule, or
``override``/``underride`` rules matching ``room_id``). The spec's room_upgrades.md
leaves this to servers; clients (and SyTest) rely on Synapse's behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from pocketserver.account_data.service import AccountDataService
from pocketserver.core.push_rules import PushRule
from pocketserver.errors import MatrixError
from pocketserver.push.rules import PushRules

log = logging.getLogger(__name__)

DIRECT = "m.direct"


def _names_room(rule: PushRule, room_id: str) -> bool:
    if rule.default:
        return False
    if rule.kind == "room":
        return rule.rule_id == room_id
    return any(
        isinstance(c, Mapping) and c.get("key") == "room_id" and c.get("pattern") == room_id
        for c in rule.conditions
    )


def _moved_rule(rule: PushRule, old: str, new: str) -> tuple[str, dict[str, object]]:
    body: dict[str, object] = {"actions": list(rule.actions)}
    if rule.kind in ("override", "underride"):
        body["conditions"] = [
            {**c, "pattern": new}
            if isinstance(c, Mapping) and c.get("key") == "room_id" and c.get("pattern") == old
            else c
            for c in rule.conditions
        ]
    # As Synapse: the copy's ID is the new room's ID, whatever the kind; the old rule stays.
    return new, body


class UpgradeTransfer:
    def __init__(self, account_data: AccountDataService, push_rules: PushRules) -> None:
        self._account_data = account_data
        self._rules = push_rules

    async def transfer(self, old_room: str, new_room: str, user_ids: Iterable[str]) -> None:
        """Copy each user's state; a failure for one user is logged and skipped."""
        for user_id in user_ids:
            try:
                await self._direct(user_id, old_room, new_room)
                tags = await self._account_data.tags(user_id, old_room)
                for tag, body in tags.items():
                    await self._account_data.set_tag(
                        user_id, new_room, tag, body if isinstance(body, Mapping) else {}
                    )
                for rule in await self._rules.rules_for(user_id):
                    if _names_room(rule, old_room):
                        rule_id, body = _moved_rule(rule, old_room, new_room)
                        await self._rules.put_rule(user_id, rule.kind, rule_id, body)
                        if not rule.enabled:
                            await self._rules.set_enabled(user_id, rule.kind, rule_id, False)
            except MatrixError as e:
                log.warning("upgrade %s: state of %s not copied: %s", old_room, user_id, e.error)

    async def _direct(self, user_id: str, old_room: str, new_room: str) -> None:
        try:
            direct = await self._account_data.get(user_id, None, DIRECT)
        except MatrixError:
            return  # none
        for key, rooms in direct.items():
            if isinstance(rooms, list) and old_room in rooms and new_room not in rooms:
                await self._account_data.set(
                    user_id, None, DIRECT, {**direct, key: [*rooms, new_room]}
                )
                return
