-- Account data (client-server API "Client Config"): per user, global (room_id '') or
-- per room, one row per type. Tags (m.tag), the fully read marker (m.fully_read) and
-- the ignored user list (m.ignored_user_list) are account data too.
-- stream_id is the account data stream position of the row's last change; the
-- position only ever grows (one counter row, bumped in the writing transaction).

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    size INTEGER NOT NULL,
    stream_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
) WITHOUT ROWID;
CREATE INDEX account_data_user_stream ON account_data(user_id, stream_id);

CREATE TABLE account_data_stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT INTO account_data_stream (id, position) VALUES (1, 0);
