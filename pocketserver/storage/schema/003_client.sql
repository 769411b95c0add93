-- Client-server API: transaction IDs for idempotent sends, uploaded filters,
-- and an index for a user's membership changes (sync).

CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
) WITHOUT ROWID;
CREATE INDEX event_txn_ids_event ON event_txn_ids(event_id);

CREATE TABLE user_filters (
    user_id TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
) WITHOUT ROWID;

CREATE INDEX events_state_key_type ON events(state_key, type, stream_ordering)
    WHERE state_key IS NOT NULL;

-- Room aliases (#name:server -> room) and the public room directory.
CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX room_aliases_room ON room_aliases(room_id);

CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    published_ts INTEGER NOT NULL
) WITHOUT ROWID;

-- Profiles of local users.
CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
) WITHOUT ROWID;
