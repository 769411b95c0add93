-- Event relations (client-server API "Forming relationships between events"):
-- one row per accepted, non-outlier event whose content has an m.relates_to with
-- a rel_type and an event_id. Filled by the room writer's transaction hook
-- (rooms/relations.py). A redacted child loses its relation: queries leave out
-- children named by an accepted redaction (the redactions table).
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,          -- the child
    relates_to_id TEXT NOT NULL,        -- the parent
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,                 -- the child's event type
    sender TEXT NOT NULL,
    is_state INTEGER NOT NULL,          -- the child has a state_key
    new_content INTEGER NOT NULL,       -- content has an m.new_content object (edits)
    origin_server_ts INTEGER NOT NULL,
    stream_ordering INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX event_relations_parent ON event_relations(relates_to_id, stream_ordering);
CREATE INDEX event_relations_threads ON event_relations(room_id, rel_type, relates_to_id)
    WHERE rel_type = 'm.thread';

-- Index the relations of events stored before this migration.
INSERT OR IGNORE INTO event_relations
SELECT event_id,
       json_extract(json, '$.content."m.relates_to".event_id'),
       json_extract(json, '$.content."m.relates_to".rel_type'),
       room_id, type, sender, state_key IS NOT NULL,
       json_type(json, '$.content."m.new_content"') IS 'object',
       origin_server_ts, stream_ordering
FROM events
WHERE outlier = 0 AND rejected IS NULL AND soft_failed = 0
  AND json_type(json, '$.content."m.relates_to".rel_type') IS 'text'
  AND json_type(json, '$.content."m.relates_to".event_id') IS 'text';
