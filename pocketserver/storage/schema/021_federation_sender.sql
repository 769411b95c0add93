-- The federation sender (pocketserver/federation/sender/): what each destination is
-- owed, survives restarts. As Synapse's destinations / destination_rooms design:
-- per destination and room only the newest event of ours owed there is kept; after
-- an outage the destination gets each room's latest events and pulls the gap itself
-- (/get_missing_events), so the table grows with rooms, never with the backlog.
CREATE TABLE federation_sender_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_ordering INTEGER NOT NULL      -- every event up to here has been matched
);

CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failure_ts INTEGER,                   -- when the current outage began (ms); NULL: up
    retry_last_ts INTEGER NOT NULL DEFAULT 0,      -- last failed attempt (ms)
    retry_interval_ms INTEGER NOT NULL DEFAULT 0,  -- 0: not backing off
    last_successful_stream_ordering INTEGER        -- delivered everything owed up to here
) WITHOUT ROWID;

CREATE TABLE federation_destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,     -- the newest event of ours owed in the room
    PRIMARY KEY (destination, room_id)
) WITHOUT ROWID;
CREATE INDEX federation_destination_rooms_order
    ON federation_destination_rooms(destination, stream_ordering);

-- EDUs that must not be lost across a restart (to-device messages, device list and
-- signing key updates), deleted once the destination accepted their transaction.
CREATE TABLE federation_edu_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    lane INTEGER NOT NULL,                -- 0: to-device, 1: device lists and keys
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL                 -- JSON
);
CREATE INDEX federation_edu_outbox_lane ON federation_edu_outbox(destination, lane, seq);
