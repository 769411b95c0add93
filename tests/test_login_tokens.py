"""LoginTokens in process: single use, expiry, the bound and the per-user rate."""

from __future__ import annotations

import pytest
import trio

from pocketserver.accounts.login_tokens import LoginTokens
from pocketserver.errors import MatrixError

ALICE = "@alice:test.local"
BOB = "@bob:test.local"


def _errcode(exc: pytest.ExceptionInfo[MatrixError]) -> tuple[int, str]:
    return exc.value.status, exc.value.errcode


async def test_single_use() -> None:
    tokens = LoginTokens(60_000)
    issued = tokens.issue(ALICE)
    assert issued.expires_in_ms == 60_000
    assert tokens.redeem(issued.token) == ALICE
    with pytest.raises(MatrixError) as exc:
        tokens.redeem(issued.token)
    assert _errcode(exc) == (403, "M_FORBIDDEN")
    assert len(tokens) == 0


async def test_expiry(autojump_clock: trio.abc.Clock) -> None:
    tokens = LoginTokens(2_000)
    early = tokens.issue(ALICE).token
    late_token = tokens.issue(BOB).token
    await trio.sleep(1.0)
    assert tokens.redeem(early) == ALICE
    await trio.sleep(1.5)
    with pytest.raises(MatrixError):
        tokens.redeem(late_token)
    assert len(tokens) == 0  # expired ones are dropped, not kept until redeemed


async def test_rate_limit_per_user(autojump_clock: trio.abc.Clock) -> None:
    tokens = LoginTokens(60_000)
    tokens.check_rate(ALICE)
    tokens.issue(ALICE)
    with pytest.raises(MatrixError) as exc:
        tokens.check_rate(ALICE)
    assert _errcode(exc) == (429, "M_LIMIT_EXCEEDED")
    tokens.check_rate(BOB)  # another user is not held up
    await trio.sleep(61)
    tokens.check_rate(ALICE)
    tokens.issue(ALICE)


async def test_bounded_oldest_dropped() -> None:
    tokens = LoginTokens(60_000, max_tokens=3)
    issued = [tokens.issue(f"@u{i}:test.local").token for i in range(5)]
    assert len(tokens) == 3
    with pytest.raises(MatrixError):
        tokens.redeem(issued[0])
    assert tokens.redeem(issued[4]) == "@u4:test.local"


async def test_only_digests_are_kept() -> None:
    tokens = LoginTokens(60_000)
    token = tokens.issue(ALICE).token
    assert token.startswith("plt_")
    assert len(token) > 40
    assert all(token.encode() not in repr(v).encode() for v in vars(tokens).values())
