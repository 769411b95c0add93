"""Authorisation rules for ``m.room.power_levels`` events.

Spec: rule 10 of ``fragments/v1-auth-rules.md`` (v1, v2) and ``v3-auth-rules.md``
(v3-v5); rule 9 of ``v6.md``/``v7.md`` (adds ``notifications`` to 9.4/9.5),
``v8-auth-rules.md``, ``v10.md`` (adds 9.1/9.2: integers only) and ``v11.md``;
rule 10 of ``v12.md`` (adds 10.4: creators must not appear in ``users``). The
sub-rule names below use the v10 numbering.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core import power_levels as pl
from pocketserver.core.auth_context import POWER_KEY, AuthContext, AuthError

__all__ = ["check_power_levels_event"]

_NAMED = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")


def _level_map(content: Mapping[str, object], key: str) -> Mapping[str, object]:
    try:
        return pl.get_level_map(content, key)
    except pl.InvalidPowerLevel as exc:
        raise AuthError("power_levels.invalid", str(exc)) from None


def _parse(value: object, integer_only: bool) -> int:
    try:
        return pl.parse_power_level(value, integer_only=integer_only)
    except pl.InvalidPowerLevel as exc:
        raise AuthError("power_levels.invalid", str(exc)) from None


def _check_new_content(ctx: AuthContext) -> None:
    """Rules 9.1-9.3 (v10+) / 10.1 (v1-v5) / 9.1 (v6-v9) and v12 10.4."""
    content, integer_only = ctx.content, ctx.version.integer_only_power_levels
    if integer_only:
        for name in _NAMED:  # v10 9.1
            if name in content and type(content[name]) is not int:
                raise AuthError("power_levels.not_integer", f"{name} is not an integer (9.1)")
        for name in ("events", "notifications"):  # v10 9.2
            if name in content and not (
                isinstance(content[name], Mapping)
                and all(type(v) is int for v in _level_map(content, name).values())
            ):
                raise AuthError("power_levels.not_integer", f"{name} values must be integers")
    users = _level_map(content, "users")
    for user_id, value in users.items():  # v1 10.1 / v10 9.3
        # Synapse's UserID.from_string: "@" sigil and a ":" (historical IDs allowed).
        if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
            raise AuthError("power_levels.users", f"{user_id!r} is not a user ID (9.3)")
        _parse(value, integer_only)
    if ctx.version.hydra and ctx.creators() & set(users):  # v12 10.4
        raise AuthError("power_levels.creators", "room creators must not be in users (10.4)")


def _pairs(
    old: Mapping[str, object], new: Mapping[str, object], key: str, integer_only: bool
) -> tuple[int | None, int | None] | None:
    """Parsed (current, new) values of ``key``, or None when it did not change."""
    before = _parse(old[key], integer_only) if key in old else None
    after = _parse(new[key], integer_only) if key in new else None
    if before is not None and after is not None and before == after:
        return None
    return before, after


def _check_changes(
    old: Mapping[str, object],
    new: Mapping[str, object],
    sender_level: int | float,
    integer_only: bool,
    keys: list[str],
) -> None:
    """9.5-9.7 style: a changed entry's current and new value must not exceed the sender's."""
    for key in keys:
        pair = _pairs(old, new, key, integer_only)
        if pair is None:
            continue
        before, after = pair
        if (before is not None and before > sender_level) or (
            after is not None and after > sender_level
        ):
            raise AuthError("power_levels.change", f"{key!r}: level above the sender's (9.5-9.7)")


def check_power_levels_event(ctx: AuthContext) -> None:
    """Rules for an ``m.room.power_levels`` event; returning means allow.

    Args:
        ctx: The power levels event and the state it is checked against.

    Raises:
        AuthError: The event is rejected.
    """
    _check_new_content(ctx)
    if ctx.state.get(POWER_KEY) is None:  # 9.4: no previous power levels -> allow
        return
    old, new = ctx.power_levels() or {}, ctx.content
    integer_only = ctx.version.integer_only_power_levels
    sender_level = ctx.user_level(ctx.sender)
    _check_changes(old, new, sender_level, integer_only, list(_NAMED))  # 9.5
    maps = (
        ["events", "notifications"] if ctx.version.limit_notifications_power_levels else ["events"]
    )
    for name in maps:  # 9.6, 9.7 (notifications: v6+)
        old_map, new_map = _level_map(old, name), _level_map(new, name)
        keys = list(dict.fromkeys([*old_map, *new_map]))
        _check_changes(old_map, new_map, sender_level, integer_only, keys)
    old_users, new_users = _level_map(old, "users"), _level_map(new, "users")
    for user_id in dict.fromkeys([*old_users, *new_users]):  # 9.8, 9.9
        pair = _pairs(old_users, new_users, user_id, integer_only)
        if pair is None:
            continue
        before, after = pair
        if user_id != ctx.sender and before is not None and before >= sender_level:
            raise AuthError("power_levels.users_change", f"cannot change {user_id}'s level (9.8)")
        if (before is not None and before > sender_level) or (
            after is not None and after > sender_level
        ):
            raise AuthError("power_levels.users_change", f"{user_id}: above the sender's (9.9)")
