"""The incremental reader of big JSON objects (federation/json_items.py): whatever the
chunking, it hands back the same elements and members as ``json.loads`` of the whole,
one element at a time, and refuses broken or oversized input."""

from __future__ import annotations

import json

import pytest

from pocketserver.federation.json_items import Item, JsonItems, JsonStreamError, Member

ANSWER = {
    "origin": "a.test",
    "auth_chain": [{"i": i, "s": 'é"\\}]' * (i % 3)} for i in range(50)],
    "state": [{"i": i, "nested": {"a": [1, 2, {"b": "]"}]}} for i in range(200)],
    "event": {"type": "m.room.member", "n": 1.5e3},
    "members_omitted": True,
    "servers_in_room": ["a.test", "b.test"],
    "count": 12345,
    "empty": [],
}


def _read(data: bytes, size: int, max_value: int = 1 << 20) -> list[Item | Member]:
    reader = JsonItems(["auth_chain", "state", "empty"], max_value=max_value)
    out: list[Item | Member] = []
    for i in range(0, len(data), size):
        out.extend(reader.feed(data[i : i + size]))
    out.extend(reader.close())
    return out


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_any_chunking_gives_what_json_loads_gives(size: int, indent: int | None) -> None:
    data = json.dumps(ANSWER, indent=indent, ensure_ascii=False).encode()
    out = _read(data, size)
    items = [(o.key, o.value) for o in out if isinstance(o, Item)]
    members = {o.key: o.value for o in out if isinstance(o, Member)}
    assert items == [("auth_chain", v) for v in ANSWER["auth_chain"]] + [  # type: ignore[attr-defined]
        ("state", v)
        for v in ANSWER["state"]  # type: ignore[attr-defined]
    ]
    assert members == {k: v for k, v in ANSWER.items() if k not in ("auth_chain", "state", "empty")}


def test_elements_come_out_before_the_end() -> None:
    reader = JsonItems(["state"])
    out = reader.feed(b'{"state": [{"a": 1}, {"b": 2}, {"c"')
    assert [o.value for o in out] == [{"a": 1}, {"b": 2}]
    assert [o.value for o in reader.feed(b": 3}]}")] == [{"c": 3}]
    assert reader.close() == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[1, 2]",
        b'{"state": [{"a": 1}',
        b'{"state": [{"a": 1},]}',
        b'{"state": [{"a": 1}] "x": 1}',
        b'{"a": 1} {"b": 2}',
        b'{"a": tru}',
        b'{"a": "\xff"}',
        b"{1: 2}",
    ],
)
def test_broken_input_is_an_error(data: bytes) -> None:
    with pytest.raises(JsonStreamError):
        _read(data, 3)


def test_an_oversized_element_is_refused_without_waiting_for_its_end() -> None:
    reader = JsonItems(["state"], max_value=100)
    reader.feed(b'{"state": [{"pad": "')
    reader.feed(b"x" * 90)  # not too big yet: the element may still end
    with pytest.raises(JsonStreamError):
        reader.feed(b"x" * 20)


def test_a_number_split_across_chunks_is_read_whole() -> None:
    out = _read(b'{"count": 123456789}', 4)
    assert out == [Member("count", 123456789)]
