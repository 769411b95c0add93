"""History visibility, table-driven from client-server-api/modules/history_visibility.md
"Server behaviour", plus the server rule and a differential test against Synapse."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketserver.core.visibility import (
    ServerVisibilityContext,
    UserVisibilityContext,
    effective_history_visibility,
    filter_events_for_client,
    filter_events_for_server,
    is_event_visible_to_server,
    is_event_visible_to_user,
)

ME = "@me:here.org"
MESSAGE = {"type": "m.room.message", "sender": "@other:x.org", "content": {"body": "hi"}}
VISIBILITIES = [None, "world_readable", "shared", "invited", "joined", "bogus"]
MEMBERSHIPS = [None, "join", "invite", "leave", "ban", "knock"]


def _expected(visibility: str | None, membership: str | None, joined_later: bool) -> bool:
    """The five rules of "Server behaviour", written out once more as a table oracle."""
    v = visibility if visibility in ("world_readable", "shared", "invited", "joined") else "shared"
    return (
        v == "world_readable"
        or membership == "join"
        or (v == "shared" and joined_later)
        or (membership == "invite" and v == "invited")
    )


@pytest.mark.parametrize(
    ("visibility", "membership", "joined_later", "visible"),
    [
        # 1. world_readable: allow, whatever the membership.
        ("world_readable", None, False, True),
        ("world_readable", "ban", False, True),
        # 2. joined at the event: allow under every visibility.
        ("joined", "join", False, True),
        ("invited", "join", False, True),
        ("shared", "join", False, True),
        # 3. shared, and the user joined at any point after the event.
        ("shared", None, True, True),
        ("shared", "leave", True, True),
        ("shared", None, False, False),
        ("invited", None, True, False),
        ("joined", "leave", True, False),
        # 4. invited at the event under "invited".
        ("invited", "invite", False, True),
        ("joined", "invite", False, False),
        ("invited", "knock", False, False),
        # 5. otherwise deny.
        ("joined", None, False, False),
        ("joined", "ban", True, False),
        # Missing or not understood: "shared".
        (None, None, True, True),
        (None, None, False, False),
        ("bogus", "leave", True, True),
        ("WORLD_READABLE", None, False, False),
    ],
)
def test_spec_rules(
    visibility: str | None, membership: str | None, joined_later: bool, visible: bool
) -> None:
    ctx = UserVisibilityContext(visibility, membership, joined_later=joined_later)
    assert is_event_visible_to_user(ME, MESSAGE, ctx) is visible


@pytest.mark.parametrize("visibility", VISIBILITIES)
@pytest.mark.parametrize("membership", MEMBERSHIPS)
@pytest.mark.parametrize("joined_later", [False, True])
def test_all_combinations_follow_the_rules(
    visibility: str | None, membership: str | None, joined_later: bool
) -> None:
    ctx = UserVisibilityContext(visibility, membership, joined_later=joined_later)
    expected = _expected(visibility, membership, joined_later)
    assert is_event_visible_to_user(ME, MESSAGE, ctx) is expected


@pytest.mark.parametrize(
    ("value", "effective"),
    [
        (None, "shared"),
        ("joined", "joined"),
        ("invited", "invited"),
        ("world_readable", "world_readable"),
        ("everyone", "shared"),
        (3, "shared"),
    ],
)
def test_effective_history_visibility(value: object, effective: str) -> None:
    assert effective_history_visibility(value) == effective


def _hv_event() -> dict[str, Any]:
    return {
        "type": "m.room.history_visibility",
        "state_key": "",
        "sender": "@admin:x.org",
        "content": {"history_visibility": "joined"},
    }


@pytest.mark.parametrize(
    ("before", "after", "membership", "visible"),
    [
        # The spec's examples: world_readable -> joined and joined -> world_readable
        # are visible to a non-member.
        ("world_readable", "joined", None, True),
        ("joined", "world_readable", None, True),
        ("shared", "joined", None, False),  # not joined later: neither allows
        # The spec's "before or after" would let the invitee see this; like Synapse
        # the value before only counts for world_readable / shared.
        ("invited", "joined", "invite", False),
        ("shared", "joined", "leave", False),
        ("joined", "joined", None, False),
        (None, "joined", "leave", False),
    ],
)
def test_history_visibility_events_use_before_or_after(
    before: str | None, after: str, membership: str | None, visible: bool
) -> None:
    ctx = UserVisibilityContext(after, membership, prev_history_visibility=before)
    assert is_event_visible_to_user(ME, _hv_event(), ctx) is visible


def test_history_visibility_event_from_shared_is_visible_to_later_joiners() -> None:
    ctx = UserVisibilityContext("joined", None, joined_later=True, prev_history_visibility="shared")
    assert is_event_visible_to_user(ME, _hv_event(), ctx)


def _member(user: str, membership: str) -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "state_key": user,
        "sender": user,
        "content": {"membership": membership},
    }


@pytest.mark.parametrize(
    ("before", "after", "visible"),
    [
        # "a user can always see m.room.member events which set their membership to
        # join, or which change their membership from join to any other value"
        (None, "join", True),
        ("invite", "join", True),
        ("join", "leave", True),
        ("join", "ban", True),
        ("join", "join", True),
        # Not joined before or after under "joined": hidden ...
        (None, "invite", False),
        ("leave", "ban", False),
        # ... except, like Synapse, their own rejection of an invite.
        ("invite", "leave", True),
    ],
)
def test_own_membership_events_use_before_or_after(
    before: str | None, after: str, visible: bool
) -> None:
    # The state "at" the event (after it) holds the new membership; pass it too.
    ctx = UserVisibilityContext("joined", after, prev_membership=before)
    assert is_event_visible_to_user(ME, _member(ME, after), ctx) is visible


def test_other_users_membership_events_are_not_special() -> None:
    ctx = UserVisibilityContext("joined", None, prev_membership="join")
    assert not is_event_visible_to_user(ME, _member("@you:x.org", "join"), ctx)


def test_filter_events_for_client_keeps_order_and_uses_per_event_state() -> None:
    events = [{**MESSAGE, "event_id": f"$e{i}"} for i in range(5)]
    contexts = {
        "$e0": UserVisibilityContext("joined", None),
        "$e1": UserVisibilityContext("joined", "join"),
        "$e2": UserVisibilityContext("world_readable", None),
        "$e3": UserVisibilityContext("shared", "leave", joined_later=True),
        "$e4": UserVisibilityContext("invited", "leave"),
    }
    kept = filter_events_for_client(ME, events, lambda e: contexts[str(e["event_id"])])
    assert [e["event_id"] for e in kept] == ["$e1", "$e2", "$e3"]


@pytest.mark.parametrize(
    ("visibility", "memberships", "visible"),
    [
        ("world_readable", [], True),
        ("shared", [], True),
        (None, [], True),
        ("bogus", [], True),
        ("invited", [("@a:remote.org", "invite")], True),
        ("invited", [("@a:remote.org", "leave"), ("@b:remote.org", "join")], True),
        ("invited", [("@a:other.org", "join")], False),  # not a user of that server
        ("joined", [("@a:remote.org", "invite")], False),
        ("joined", [("@a:remote.org", "join")], True),
        ("joined", [("@a:remote.org.evil", "join")], False),
        ("joined", [], False),
    ],
)
def test_server_rule(
    visibility: str | None, memberships: list[tuple[str, str]], visible: bool
) -> None:
    ctx = ServerVisibilityContext(visibility, memberships)
    assert is_event_visible_to_server("remote.org", ctx) is visible


def test_filter_events_for_server() -> None:
    events = [{"n": 0}, {"n": 1}, {"n": 2}]
    contexts = [
        ServerVisibilityContext("joined", [("@a:remote.org", "leave")]),
        ServerVisibilityContext("joined", [("@a:remote.org", "join")]),
        ServerVisibilityContext("shared"),
    ]
    kept = filter_events_for_server("remote.org", events, lambda e: contexts[int(e["n"])])
    assert kept == events[1:]


# --- differential: Synapse's rules -----------------------------------------------------

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        from synapse.synapse_rust.events import event_visible_to_server
    except ImportError:  # pragma: no cover - Synapse not installed
        event_visible_to_server = None

needs_synapse = pytest.mark.skipif(event_visible_to_server is None, reason="needs synapse")
USERS = ["@a:remote.org", "@b:remote.org", "@c:other.org", "@d:remote.org.x"]


@needs_synapse
@settings(max_examples=300, deadline=None)
@given(
    visibility=st.sampled_from(VISIBILITIES[1:]),
    memberships=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(MEMBERSHIPS[1:]))),
)
def test_server_rule_matches_synapse(visibility: str, memberships: list[tuple[str, str]]) -> None:
    assert event_visible_to_server is not None
    theirs = event_visible_to_server(
        sender="@x:x.org",
        target_server_name="remote.org",
        history_visibility=visibility,
        erased_senders={},
        partial_state_invisible=False,
        memberships=[m for m in memberships if m[0].endswith(":remote.org")],
    )
    ours = is_event_visible_to_server(
        "remote.org", ServerVisibilityContext(visibility, memberships)
    )
    assert ours is theirs


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import synapse.event_auth  # noqa: F401  (first: avoids a circular import)
        from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
        from synapse.events import make_event_from_dict
        from synapse.visibility import _check_client_allowed_to_see_event
    except ImportError:  # pragma: no cover - Synapse not installed
        _check_client_allowed_to_see_event = None


def _synapse_event(n: int, fields: dict[str, Any], prev_content: dict | None) -> Any:
    pdu = {
        "room_id": "!r:x.org",
        "origin_server_ts": 1,
        "auth_events": [],
        "prev_events": [],
        "depth": 1,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {},
        "event_id": f"$e{n}:x.org",
        **fields,
    }
    if prev_content is not None:
        pdu["unsigned"] = {"prev_content": prev_content}
    return make_event_from_dict(pdu, KNOWN_ROOM_VERSIONS["1"])


def _client_cases() -> list[tuple[str, str | None, str | None, bool, str | None, str | None]]:
    cases = []
    for hv, mem, later in itertools.product(VISIBILITIES, MEMBERSHIPS, [False, True]):
        cases.append(("message", hv, mem, later, None, None))
        if hv is not None:
            cases += [("history", hv, mem, later, prev, None) for prev in VISIBILITIES]
        if mem is not None:
            cases += [("own", hv, mem, later, None, prev) for prev in MEMBERSHIPS]
    return cases


@pytest.mark.skipif(_check_client_allowed_to_see_event is None, reason="needs synapse")
def test_client_rule_matches_synapse() -> None:
    """Every combination of visibility, membership, joined-later and before-values
    against Synapse's ``_check_client_allowed_to_see_event`` (``is_peeking`` = not
    joined later; no erasure, no filtering for clients)."""
    hv_key, my_key = ("m.room.history_visibility", ""), ("m.room.member", ME)
    for n, (kind, hv, mem, later, prev_hv, prev_mem) in enumerate(_client_cases()):
        state: dict[tuple[str, str], Any] = {}
        hv_fields = {"type": hv_key[0], "state_key": "", "sender": "@a:x.org"}
        if hv is not None:
            content = {"history_visibility": hv}
            state[hv_key] = _synapse_event(3 * n, {**hv_fields, "content": content}, None)
        mem_fields = {"type": my_key[0], "state_key": ME, "sender": ME}
        if mem is not None:
            content = {"membership": mem}
            state[my_key] = _synapse_event(3 * n + 1, {**mem_fields, "content": content}, None)
        if kind == "message":
            fields = {"type": "m.room.message", "sender": "@a:x.org", "content": {}}
            event = _synapse_event(3 * n + 2, fields, None)
        elif kind == "history":
            prev = {"history_visibility": prev_hv} if prev_hv else None
            fields = {**hv_fields, "content": {"history_visibility": hv}}
            event = state[hv_key] = _synapse_event(3 * n + 2, fields, prev)
        else:
            prev = {"membership": prev_mem} if prev_mem else None
            fields = {**mem_fields, "content": {"membership": mem}}
            event = state[my_key] = _synapse_event(3 * n + 2, fields, prev)
        theirs = _check_client_allowed_to_see_event(
            ME, event, None, False, not later, frozenset(), False, None, state, False
        )
        ctx = UserVisibilityContext(hv, mem, later, prev_hv, prev_mem)
        ours = is_event_visible_to_user(ME, event.get_dict(), ctx)
        assert ours is (theirs is not None), (kind, hv, mem, later, prev_hv, prev_mem)
