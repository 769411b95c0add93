"""A small raw-HTTP client for end-to-end tests of room history and relations."""

from __future__ import annotations

from typing import Any

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
_open: list[httpx.Client] = []


def close_all() -> None:
    """Close every client made so far (call before the server stops)."""
    while _open:
        _open.pop().close()


def err(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")


class User:
    def __init__(self, server: RunningServer, localpart: str) -> None:
        info = server.register(localpart)
        self.user_id = info["user_id"]
        self.http = httpx.Client(
            base_url=server.base_url,
            timeout=30.0,
            headers={"Authorization": f"Bearer {info['access_token']}"},
        )
        _open.append(self.http)
        self._txn = 0

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(V3 + path, params=params)

    def ok(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def create(self, **body: Any) -> str:
        r = self.http.post(f"{V3}/createRoom", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["room_id"])

    def send(self, room: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
        self._txn += 1
        r = self.http.put(f"{V3}/rooms/{room}/send/{etype}/t{self._txn}", json=content)
        assert r.status_code == 200, r.text
        return str(r.json()["event_id"])

    def text(self, room: str, body: str, **extra: Any) -> str:
        return self.send(room, {"msgtype": "m.text", "body": body, **extra})

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(V3 + path, json=body or {})

    def join(self, room: str) -> None:
        assert self.post(f"/rooms/{room}/join").status_code == 200

    def sync(self, **params: Any) -> dict[str, Any]:
        return self.ok("/sync", **params)


def _err(r: httpx.Response) -> tuple[int, str]:
    return r.status_code, r.json().get("errcode")
