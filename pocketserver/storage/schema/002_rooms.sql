-- The room DAG: events, their edges, state at every event, current state.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    created_ts INTEGER NOT NULL
) WITHOUT ROWID;

-- State is stored as groups. A group is either a snapshot (prev_group IS NULL,
-- its edits are the whole state) or a delta on prev_group. A new delta becomes
-- a snapshot instead once the chain of deltas since the last snapshot would
-- exceed max(100, size of the state): snapshots then cost at most one row per
-- state change, so storage stays within 2x of one row per change, and reading
-- any group walks at most max(100, size) rows.
CREATE TABLE state_groups (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group INTEGER REFERENCES state_groups(id),
    chain_length INTEGER NOT NULL,      -- edits since the snapshot (0 for a snapshot)
    size INTEGER NOT NULL               -- entries in the full state of this group
);

CREATE TABLE state_group_edits (
    group_id INTEGER NOT NULL REFERENCES state_groups(id),
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,                      -- NULL: the key is gone relative to prev_group
    PRIMARY KEY (group_id, type, state_key)
) WITHOUT ROWID;

-- Every event once. stream_ordering is the global position sync uses: writes are
-- serialised, so it grows in commit order and a token never runs ahead.
CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,                     -- NULL for non-state events
    sender TEXT NOT NULL,
    depth INTEGER NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    json TEXT NOT NULL,                 -- the PDU as received/sent (unredacted until censored)
    outlier INTEGER NOT NULL DEFAULT 0, -- known, authorised, but no state at it
    soft_failed INTEGER NOT NULL DEFAULT 0,
    rejected TEXT,                      -- why it was rejected; NULL if accepted
    state_before INTEGER REFERENCES state_groups(id),
    state_after INTEGER REFERENCES state_groups(id),
    censored INTEGER NOT NULL DEFAULT 0 -- json was replaced by its redacted form
);
CREATE INDEX events_room_stream ON events(room_id, stream_ordering);
CREATE INDEX events_room_topological ON events(room_id, depth, stream_ordering);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
CREATE INDEX event_edges_prev ON event_edges(prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
) WITHOUT ROWID;

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,                    -- for m.room.member: the membership
    PRIMARY KEY (room_id, type, state_key)
) WITHOUT ROWID;
CREATE INDEX current_state_by_key ON current_state(type, state_key);

-- Redactions are applied when events are read; the original stays until the
-- retention period passes, then the stored JSON is censored.
CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,          -- the m.room.redaction event
    redacts TEXT NOT NULL,
    received_ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX redactions_redacts ON redactions(redacts);
