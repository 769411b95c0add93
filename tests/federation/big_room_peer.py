"""A federation peer that holds one BIG room cheaply (issue #11): the room is generated
once (properly hashed and signed with the peer's own ed25519 key) into a SQLite file
under a cache directory, and served over HTTPS on loopback by a small threaded stdlib
server: keys, make_join, send_join (v1 and v2, with and without ``omit_members``),
state_ids, state, event, get_missing_events, backfill and ``PUT /send``.

The room is a line: create, the owner's join, power levels, join rules (public),
history visibility, name, then ``members`` joins of ``@mNNNNN:peer``, then filler state
(``org.example.filler``) up to ``state_events`` state events, then a few messages.
Events that reach the peer afterwards (a joiner's join, messages sent to it through
``/send``) are appended in memory; the state the peer answers is the generated state
plus those.

Usable from tests (``running_big_peer``) and from benches (tests/bench/bench_big_join.py).
Nothing here checks what a client sends beyond what it needs: it is a test double of
a resident server, not a server.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pocketserver.core.crypto import (
    generate_signing_key,
    make_server_keys_response,
    read_signing_keys,
    write_signing_keys,
)
from pocketserver.core.events import compute_event_id
from pocketserver.rooms.building import finish_pdu
from tests.federation.synapse_peer import TestCA, free_port

ROOM_VERSION = "10"
MEMBER = "m.room.member"
FILLER = "org.example.filler"
MESSAGES = 5
DAY_MS = 24 * 3600 * 1000


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Event:
    idx: int
    event_id: str
    pdu: dict[str, Any]


class BigRoom:
    """The generated room on disk (``room.db``) and the events appended since."""

    def __init__(self, directory: Path, server_name: str, members: int, state_events: int):
        self.directory = directory
        self.server_name = server_name
        self.members = members
        self.state_events = max(state_events, members + 6)
        directory.mkdir(parents=True, exist_ok=True)
        self.db_path = directory / "room.db"
        key_file = directory / "signing.key"
        if key_file.exists():
            self.key = read_signing_keys(key_file.read_text())[0]
        else:
            self.key = generate_signing_key("big1")
            key_file.write_text(write_signing_keys([self.key]))
        if not (directory / "done").exists():
            self._generate()
            (directory / "done").write_text("ok")
        with self._conn() as conn:
            meta = dict(conn.execute("SELECT k, v FROM meta"))
        self.room_id: str = meta["room_id"]
        self.owner: str = meta["owner"]
        self.base_count = int(meta["count"])
        self.auth_ids: dict[str, str] = json.loads(meta["auth_ids"])
        self.extras: list[_Event] = []
        self.lock = threading.Lock()

    @classmethod
    def cached(cls, cache: Path, server_name: str, members: int, state_events: int) -> BigRoom:
        name = f"room-{members}-{state_events}-{server_name.replace(':', '_')}"
        return cls(cache / name, server_name, members, state_events)

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path, check_same_thread=False)

    # --- generation ---------------------------------------------------------------------

    def _generate(self) -> None:
        """Build the room line (a few seconds for 20,000 members)."""
        self.db_path.unlink(missing_ok=True)
        name = self.server_name
        owner = f"@owner:{name}"
        room_id = f"!big{self.members}:{name}"
        conn = self._conn()
        conn.executescript(
            """
            CREATE TABLE events (idx INTEGER PRIMARY KEY, event_id TEXT UNIQUE,
                type TEXT, state_key TEXT, json TEXT);
            CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT);
            """
        )
        rows: list[tuple[int, str, str, str | None, str]] = []
        prev: list[str] = []
        depth = 0
        ts = int(time.time() * 1000) - DAY_MS
        auth: dict[str, str] = {}

        def add(etype: str, skey: str | None, sender: str, content: dict[str, Any]) -> str:
            nonlocal prev, depth, ts
            depth += 1
            ts += 1
            if etype == "m.room.create":
                auth_events: list[str] = []
            elif etype == MEMBER and skey == owner:
                auth_events = [auth["create"]]
            else:
                keys = ["create", "power", "owner"]
                if etype == MEMBER:
                    keys = ["create", "power", "join_rules"]
                auth_events = [auth[k] for k in keys if k in auth]
            pdu: dict[str, Any] = {
                "type": etype,
                "room_id": room_id,
                "sender": sender,
                "content": content,
                "depth": depth,
                "prev_events": prev,
                "auth_events": auth_events,
                "origin_server_ts": ts,
            }
            if skey is not None:
                pdu["state_key"] = skey
            event_id, signed = finish_pdu(pdu, ROOM_VERSION, name, self.key)
            rows.append((counter[0], event_id, etype, skey, _dump(signed)))
            counter[0] += 1
            prev = [event_id]
            if len(rows) >= 2000:
                flush()
            return event_id

        def flush() -> None:
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
            conn.commit()
            rows.clear()

        counter = [0]
        auth["create"] = add("m.room.create", "", owner, {"creator": owner, "room_version": "10"})
        auth["owner"] = add(MEMBER, owner, owner, {"membership": "join"})
        auth["power"] = add(
            "m.room.power_levels",
            "",
            owner,
            {"users": {owner: 100}, "users_default": 0, "events_default": 0, "state_default": 50},
        )
        auth["join_rules"] = add("m.room.join_rules", "", owner, {"join_rule": "public"})
        add("m.room.history_visibility", "", owner, {"history_visibility": "shared"})
        add("m.room.name", "", owner, {"name": f"Big room of {self.members}"})
        for i in range(self.members):
            user = f"@m{i:05d}:{name}"
            add(MEMBER, user, user, {"membership": "join", "displayname": f"M {i}"})
        for i in range(self.state_events - self.members - 6):
            add(FILLER, f"f{i:05d}", owner, {"n": i})
        for i in range(MESSAGES):
            add("m.room.message", None, owner, {"msgtype": "m.text", "body": f"hello {i}"})
        flush()
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("room_id", room_id),
                ("owner", owner),
                ("count", str(count)),
                ("auth_ids", _dump(auth)),
            ],
        )
        conn.commit()
        conn.close()

    # --- reading ------------------------------------------------------------------------

    def latest(self) -> tuple[str, int]:
        """``(event_id, depth)`` of the newest event."""
        with self.lock:
            if self.extras:
                last = self.extras[-1]
                return last.event_id, int(last.pdu["depth"])
        with contextlib.closing(self._conn()) as conn:
            event_id, text = conn.execute(
                "SELECT event_id, json FROM events ORDER BY idx DESC LIMIT 1"
            ).fetchone()
        return str(event_id), int(json.loads(text)["depth"])

    def index_of(self, event_id: str) -> int | None:
        with self.lock:
            for ev in self.extras:
                if ev.event_id == event_id:
                    return ev.idx
        with contextlib.closing(self._conn()) as conn:
            row = conn.execute("SELECT idx FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else int(row[0])

    def pdu_texts(self, lo: int, hi: int) -> list[str]:
        """The PDUs (JSON text) with ``lo <= idx < hi``, oldest first."""
        out: list[str] = []
        with contextlib.closing(self._conn()) as conn:
            out = [
                str(t)
                for (t,) in conn.execute(
                    "SELECT json FROM events WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)
                )
            ]
        with self.lock:
            out.extend(_dump(e.pdu) for e in self.extras if lo <= e.idx < hi)
        return out

    def event_text(self, event_id: str) -> str | None:
        with self.lock:
            for ev in self.extras:
                if ev.event_id == event_id:
                    return _dump(ev.pdu)
        with contextlib.closing(self._conn()) as conn:
            row = conn.execute("SELECT json FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return None if row is None else str(row[0])

    def state_before(self, idx: int, *, members: bool = True) -> Iterator[tuple[str, str]]:
        """``(event_id, json)`` of the state before the event at ``idx``. The generated
        part never replaces state, so each state event of it counts once."""
        replaced = self._replaced_keys(idx)
        with contextlib.closing(self._conn()) as conn:
            query = (
                "SELECT event_id, type, state_key, json FROM events"
                " WHERE state_key IS NOT NULL AND idx < ?"
            )
            if not members:
                query += f" AND type != '{MEMBER}'"
            cur = conn.execute(query + " ORDER BY idx", (min(idx, self.base_count),))
            for event_id, etype, skey, text in cur:
                if (etype, skey) not in replaced:
                    yield str(event_id), str(text)
        with self.lock:
            extra_state: dict[tuple[str, str], _Event] = {}
            for ev in self.extras:
                if ev.idx < idx and "state_key" in ev.pdu:
                    extra_state[(ev.pdu["type"], ev.pdu["state_key"])] = ev
            chosen = list(extra_state.values())
        for ev in chosen:
            if members or ev.pdu["type"] != MEMBER:
                yield ev.event_id, _dump(ev.pdu)

    def _replaced_keys(self, idx: int) -> set[tuple[str, str]]:
        with self.lock:
            return {
                (e.pdu["type"], e.pdu["state_key"])
                for e in self.extras
                if e.idx < idx and "state_key" in e.pdu
            }

    @staticmethod
    def _key_of(text: str) -> tuple[str, str]:  # the (type, state_key) of a PDU
        pdu = json.loads(text)
        return pdu["type"], pdu["state_key"]

    def full_state(self) -> dict[tuple[str, str], str]:
        """``(type, state_key) -> event_id`` of the room now."""
        out: dict[tuple[str, str], str] = {}
        for event_id, text in self.state_before(1 << 62):
            out[self._key_of(text)] = event_id
        return out

    def append(self, pdu: dict[str, Any]) -> str:
        event_id = compute_event_id(pdu, ROOM_VERSION)
        with self.lock:
            if any(e.event_id == event_id for e in self.extras):
                return event_id
            idx = self.base_count + len(self.extras)
            self.extras.append(_Event(idx, event_id, pdu))
        return event_id


# --- the HTTP side --------------------------------------------------------------------


@dataclass
class PeerStats:
    requests: list[str] = field(default_factory=list)
    omit_members_asked: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # helpers
    def _send(self, status: int, body: bytes | list[bytes]) -> None:
        parts = body if isinstance(body, list) else [body]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(sum(len(p) for p in parts)))
        self.end_headers()
        for part in parts:
            self.wfile.write(part)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, _dump(obj).encode())

    def _unrecognised(self) -> None:
        self._json(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/")]
        query = parse_qs(url.query)
        peer = self.server.peer
        peer.stats.requests.append(f"{method} {url.path}")
        body = self._body() if method in ("PUT", "POST") else None
        try:
            if url.path == "/_matrix/key/v2/server":
                return self._json(200, peer.keys_response())
            if len(parts) < 5 or parts[1:3] != ["_matrix", "federation"]:
                return self._unrecognised()
            version, what, args = parts[3], parts[4], parts[5:]
            room = peer.room
            if what == "version":
                return self._json(200, {"server": {"name": "big_room_peer", "version": "1"}})
            if what == "send" and method == "PUT":
                for pdu in (body or {}).get("pdus", []):
                    if isinstance(pdu, dict) and pdu.get("room_id") == room.room_id:
                        room.append(pdu)
                return self._json(200, {"pdus": {}})
            if not args or (args[0] != room.room_id and what != "event"):
                return self._json(404, {"errcode": "M_NOT_FOUND", "error": "Unknown room"})
            if what == "make_join" and method == "GET":
                return self._json(200, peer.make_join(args[1], query.get("ver", [])))
            if what == "send_join" and method == "PUT":
                omit = version == "v2" and query.get("omit_members", [""])[0] == "true"
                if omit:
                    peer.stats.omit_members_asked += 1
                omit = omit and peer.honour_omit_members
                return self._send(200, peer.send_join(body, omit, v1=version == "v1"))
            if what in ("state_ids", "state") and method == "GET":
                peer.state_gate.wait(120)
                idx = room.index_of(query.get("event_id", [""])[0])
                if idx is None:
                    return self._json(404, {"errcode": "M_NOT_FOUND", "error": "Unknown event"})
                return self._send(200, peer.state(idx, ids_only=what == "state_ids"))
            if what == "event" and method == "GET":
                text = room.event_text(args[0])
                if text is None:
                    return self._json(404, {"errcode": "M_NOT_FOUND", "error": "Unknown event"})
                return self._send(200, peer.wrap_pdus([text]))
            if what == "backfill" and method == "GET":
                limit = int(query.get("limit", ["10"])[0])
                starts = [room.index_of(v) for v in query.get("v", [])]
                top = max((i for i in starts if i is not None), default=-1)
                texts = room.pdu_texts(max(0, top + 1 - limit), top + 1)
                return self._send(200, peer.wrap_pdus(list(reversed(texts))))
            if what == "get_missing_events" and method == "POST":
                limit = int(body.get("limit", 10))
                latest = [room.index_of(e) for e in body.get("latest_events", [])]
                earliest = [room.index_of(e) for e in body.get("earliest_events", [])]
                hi = min((i for i in latest if i is not None), default=0)
                lo = max((i for i in earliest if i is not None), default=-1) + 1
                texts = room.pdu_texts(max(lo, hi - limit), hi)
                return self._send(200, [b'{"events":[', ",".join(texts).encode(), b"]}"])
            return self._unrecognised()
        except (BrokenPipeError, ConnectionResetError):
            return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    peer: BigRoomPeer


class BigRoomPeer:
    """Serves one :class:`BigRoom` on ``https://host:port`` (``server_name``)."""

    def __init__(self, room: BigRoom, host: str, port: int, ca: TestCA) -> None:
        self.room = room
        self.host, self.port = host, port
        self.stats = PeerStats()
        self.honour_omit_members = True
        self.state_gate = threading.Event()
        """``/state`` answers wait while this is clear (a resync held up)."""
        self.state_gate.set()
        """False: answer every send_join in full, as a server without partial state."""
        cert, key = ca.issue(host, f"bigpeer-{host}-{port}")
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(str(cert), str(key))
        self.httpd = _Server((host, port), _Handler)
        self.httpd.peer = self
        self.httpd.socket = self._tls.wrap_socket(self.httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def server_name(self) -> str:
        return self.room.server_name

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def keys_response(self) -> dict[str, object]:
        return make_server_keys_response(
            self.server_name, self.room.key, None, int(time.time() * 1000) + DAY_MS
        )

    def make_join(self, user_id: str, versions: list[str]) -> dict[str, object]:
        latest, depth = self.room.latest()
        a = self.room.auth_ids
        event = {
            "type": MEMBER,
            "room_id": self.room.room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": {"membership": "join"},
            "depth": depth + 1,
            "prev_events": [latest],
            "auth_events": [a["create"], a["power"], a["join_rules"]],
            "origin_server_ts": int(time.time() * 1000),
        }
        return {"room_version": ROOM_VERSION, "event": event}

    def send_join(self, pdu: dict[str, Any], omit: bool, *, v1: bool) -> list[bytes]:
        """The answer, built as a list of byte chunks (the state read from disk)."""
        idx = self.room.base_count + len(self.room.extras)
        pairs = list(self.room.state_before(idx, members=not omit))
        state = [text for _, text in pairs]
        # joins-v2.yaml: a partial answer need not repeat the state in the chain.
        in_state = {e for e, _ in pairs} if omit else set()
        auth = [
            self.room.event_text(e) or "" for e in self.room.auth_ids.values() if e not in in_state
        ]
        self.room.append(pdu)
        out = [b'{"origin":', _dump(self.server_name).encode(), b',"auth_chain":[']
        out.append(",".join(auth).encode())
        out.append(b'],"state":[')
        out.append(",".join(state).encode())
        out.append(b'],"event":')
        out.append(_dump(pdu).encode())
        if not v1:
            out.append(b',"members_omitted":' + (b"true" if omit else b"false"))
            out.append(b',"servers_in_room":' + _dump([self.server_name]).encode())
        out.append(b"}")
        if v1:
            out = [b"[200,", *out, b"]"]
        return out

    def state(self, idx: int, *, ids_only: bool) -> list[bytes]:
        pairs = list(self.room.state_before(idx))
        auth_ids = list(self.room.auth_ids.values())
        if ids_only:
            return [_dump({"pdu_ids": [e for e, _ in pairs], "auth_chain_ids": auth_ids}).encode()]
        auth = [self.room.event_text(e) or "" for e in auth_ids]
        return [
            b'{"pdus":[',
            ",".join(t for _, t in pairs).encode(),
            b'],"auth_chain":[',
            ",".join(auth).encode(),
            b"]}",
        ]

    def wrap_pdus(self, texts: list[str]) -> list[bytes]:
        head = {"origin": self.server_name, "origin_server_ts": int(time.time() * 1000)}
        return [_dump(head)[:-1].encode(), b',"pdus":[', ",".join(texts).encode(), b"]}"]


@contextlib.contextmanager
def running_big_peer(
    cache: Path,
    ca: TestCA,
    members: int,
    state_events: int,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> Iterator[BigRoomPeer]:
    """Generate (or reuse) the room under ``cache`` and serve it until the block ends."""
    port = port or free_port(host)
    room = BigRoom.cached(cache, f"{host}:{port}", members, state_events)
    peer = BigRoomPeer(room, host, port, ca)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
