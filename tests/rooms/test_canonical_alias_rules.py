"""Which aliases an m.room.canonical_alias event adds, and which shapes are refused."""

from __future__ import annotations

import pytest

from pocketserver.errors import MatrixError
from pocketserver.rooms.canonical_alias import new_aliases, without_alias

A, B, C = "#a:hs", "#b:hs", "#c:hs"


@pytest.mark.parametrize(
    ("content", "previous", "added"),
    [
        ({}, None, []),
        ({"alias": A}, None, [A]),
        ({"alias": A}, {"alias": A}, []),
        ({"alias": ""}, {"alias": A}, []),
        ({"alias": None}, None, []),
        ({"alias": A, "alt_aliases": [A, B]}, None, [A, B]),
        ({"alias": A, "alt_aliases": [B, C]}, {"alias": A, "alt_aliases": [B]}, [C]),
        ({"alt_aliases": [B]}, {"alt_aliases": "junk"}, [B]),
    ],
)
def test_added(content, previous, added) -> None:
    assert new_aliases(content, previous) == added


@pytest.mark.parametrize(
    "content",
    [
        {"alias": 1},
        {"alias": "a:hs"},
        {"alias": "#nocolon"},
        {"alt_aliases": A},
        {"alt_aliases": [1]},
        {"alt_aliases": ["#x:"]},
    ],
)
def test_refused(content) -> None:
    with pytest.raises(MatrixError) as e:
        new_aliases(content, None)
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"alias": A}, {}),
        ({"alias": A, "alt_aliases": [A, B]}, {"alt_aliases": [B]}),
        ({"alias": B, "alt_aliases": [A]}, {"alias": B, "alt_aliases": []}),
        ({"alias": B, "alt_aliases": [C]}, None),
        ({}, None),
    ],
)
def test_without_alias(content, expected) -> None:
    assert without_alias(content, A) == expected
