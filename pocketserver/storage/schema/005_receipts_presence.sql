-- Read receipts (client-server API "Receipts"): the latest receipt of each user, per
-- room, receipt type (m.read, m.read.private) and thread ('' for an unthreaded
-- receipt, 'main' or a thread root's event ID). A receipt only moves forward:
-- event_order is the stream ordering of the receipted event.
-- stream_id is the receipts stream position of the row's last change; the position
-- only ever grows (one counter row, bumped in the writing transaction).
-- Presence and typing live in memory only (see pocketserver/ephemeral/).

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_order INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
) WITHOUT ROWID;
CREATE INDEX receipts_room_stream ON receipts(room_id, stream_id);
CREATE INDEX receipts_by_stream ON receipts(stream_id);

CREATE TABLE receipts_stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT INTO receipts_stream (id, position) VALUES (1, 0);
