-- Rooms joined with a partial state (issue #11; joins-v2 "omit_members", MSC3706): the
-- state before our join lacks most members until the background resync
-- (federation/partial_state.py) fills them in. A row lives from just before the join
-- is stored until the resync has completed the room's state; after a restart the
-- resync starts over for each row (what it stored already is not fetched again).
CREATE TABLE partial_state_rooms (
    room_id TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,        -- our join: the state before it is partial
    room_version TEXT NOT NULL,
    servers TEXT NOT NULL,              -- JSON list: the server we joined through first
    since_ts INTEGER NOT NULL
);
