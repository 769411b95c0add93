"""The streamed JSON writer: the bytes parse to the same object, in bounded chunks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from pocketserver.api import json_stream
from pocketserver.api.json_stream import stream_object


async def _items(n: int, size: int = 100) -> AsyncIterator[dict[str, object]]:
    for i in range(n):
        yield {"i": i, "pad": "é" * size}


async def _collect(fields: dict[str, object]) -> list[bytes]:
    return [chunk async for chunk in stream_object(fields)]


@pytest.mark.parametrize("n", [0, 1, 2, 5000])
async def test_round_trip(n: int) -> None:
    chunks = await _collect(
        {"origin": "a.test", "pdus": _items(n), "auth_chain": _items(3), "members_omitted": True}
    )
    parsed = json.loads(b"".join(chunks))
    assert parsed["origin"] == "a.test"
    assert [p["i"] for p in parsed["pdus"]] == list(range(n))
    assert len(parsed["auth_chain"]) == 3
    assert parsed["members_omitted"] is True
    assert list(parsed) == ["origin", "pdus", "auth_chain", "members_omitted"]


async def test_chunks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_stream, "CHUNK_BYTES", 4096)
    chunks = await _collect({"pdus": _items(2000)})
    assert len(chunks) > 50
    # No chunk grows far past the limit: one item at most beyond it.
    assert max(len(c) for c in chunks) < 4096 + 1000
    assert len(json.loads(b"".join(chunks))["pdus"]) == 2000


async def test_empty_object() -> None:
    assert json.loads(b"".join(await _collect({}))) == {}
