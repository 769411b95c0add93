"""When a redaction is applied on read (rooms/fragments/v3-handling-redactions.md)."""

from __future__ import annotations

import pytest

from pocketserver.core.redaction import redaction_applies


def _create(version: str, creator: str = "@creator:a.org") -> dict[str, object]:
    content: dict[str, object] = {"room_version": version}
    if version not in ("11", "12"):
        content["creator"] = creator
    return {
        "type": "m.room.create",
        "state_key": "",
        "sender": creator,
        "content": content,
        "room_id": "!r:a.org",
    }


def _event(sender: str, room: str = "!r:a.org") -> dict[str, object]:
    return {"type": "m.room.message", "sender": sender, "room_id": room, "content": {"body": "x"}}


PL = {"users": {"@mod:b.org": 50, "@low:b.org": 10}, "redact": 50}


@pytest.mark.parametrize(
    ("version", "redactor", "target_sender", "power_levels", "expected"),
    [
        ("10", "@alice:a.org", "@bob:a.org", PL, True),  # same domain
        ("10", "@mod:b.org", "@bob:a.org", PL, True),  # redact level reached
        ("10", "@low:b.org", "@bob:a.org", PL, False),  # neither
        ("10", "@low:b.org", "@bob:a.org", {**PL, "redact": 5}, True),
        ("10", "@nobody:b.org", "@bob:a.org", None, False),  # no power levels: 0 < 50
        ("3", "@low:b.org", "@bob:a.org", PL, False),
        ("1", "@low:b.org", "@bob:a.org", PL, True),  # v1/v2: auth rules decided
        ("2", "@low:b.org", "@bob:a.org", PL, True),
        ("12", "@creator:b.org", "@bob:a.org", PL, False),  # not the creator of this room
        ("10", "@low:b.org", "@bob:a.org", {"users": {"@low:b.org": "x"}}, False),  # garbage
    ],
)
def test_redaction_applies(version, redactor, target_sender, power_levels, expected) -> None:
    assert (
        redaction_applies(
            _event(redactor), _event(target_sender), version, power_levels, _create(version)
        )
        is expected
    )


def test_v12_creator_has_infinite_power() -> None:
    create = _create("12", creator="@owner:b.org")
    pl = {"users": {}, "redact": 100}
    assert redaction_applies(_event("@owner:b.org"), _event("@bob:a.org"), "12", pl, create)


def test_never_across_rooms() -> None:
    assert not redaction_applies(
        _event("@alice:a.org"), _event("@alice:a.org", room="!other:a.org"), "10", PL, _create("10")
    )
