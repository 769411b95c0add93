-- Full-text search, reports, and an index for timestamp_to_event.

-- One row per searchable event; rowid is the event's stream_ordering. ``key`` is
-- content.body (m.room.message), content.name (m.room.name) or content.topic
-- (m.room.topic, with the text/plain m.topic body). Filled by a room writer hook
-- for accepted non-outlier events, emptied again by redactions.
CREATE VIRTUAL TABLE event_search USING fts5(
    body,
    key UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- Events stored before this migration (redacted ones are censored or filtered on read).
INSERT INTO event_search (rowid, body, key)
SELECT stream_ordering, substr(json_extract(json, '$.content.' || f.field), 1, 4096),
       'content.' || f.field
FROM events JOIN (
    SELECT 'm.room.message' AS etype, 'body' AS field
    UNION ALL SELECT 'm.room.name', 'name'
    UNION ALL SELECT 'm.room.topic', 'topic'
) f ON events.type = f.etype
WHERE outlier = 0 AND rejected IS NULL AND soft_failed = 0 AND censored = 0
  AND (f.etype = 'm.room.message' OR state_key = '')
  AND json_type(json, '$.content.' || f.field) = 'text';

-- Reports (client-server API "Reporting content"); column names follow Synapse's
-- event_reports / room_reports / user_reports tables.
CREATE TABLE event_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX event_reports_ts ON event_reports(received_ts);

CREATE TABLE room_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT
);

CREATE TABLE user_reports (
    id INTEGER PRIMARY KEY,
    received_ts INTEGER NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT
);

-- GET /rooms/{roomId}/timestamp_to_event
CREATE INDEX events_room_ts ON events(room_id, origin_server_ts);
