-- Memberships of our users in rooms this server does not hold (server-server-api.md
-- "Inviting to a room", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room"):
-- an invite another server sent us, our user's rejection of it, a knock on a room
-- elsewhere and its withdrawal. As Synapse's out-of-band memberships: the member event
-- itself is stored in ``events`` as an outlier (so it has a stream position sync
-- tokens cover); this table holds the user's latest one per room, with the stripped
-- state the client is shown (invite_room_state / knock_room_state, sanitised) and the
-- servers that can take a leave (the inviter's first).
CREATE TABLE out_of_band_memberships (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    room_version TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    stripped_state TEXT NOT NULL,       -- JSON list of stripped state events
    servers TEXT NOT NULL,              -- JSON list of server names
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;
CREATE INDEX out_of_band_by_stream ON out_of_band_memberships(user_id, stream_ordering);
