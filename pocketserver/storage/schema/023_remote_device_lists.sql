-- The cache of other servers' users' device lists (server-server-api.md "Device
-- Management"), and the message IDs of to-device messages received over federation.
--
-- A remote user is tracked (a row in e2e_remote_users) while they share a room with
-- one of our users. stream_id is the last m.device_list_update stream_id applied (the
-- remote server's, as text: servers send integers or strings); stale = 1 means the
-- cache may have missed an update and must be resynced with /user/devices before it
-- answers a query. Their master and self-signing keys live in e2e_cross_signing_keys
-- beside ours (user IDs do not collide), so our users can sign them.

CREATE TABLE e2e_remote_users (
    user_id TEXT PRIMARY KEY,
    stream_id TEXT,
    stale INTEGER NOT NULL DEFAULT 1,
    updated_ts INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE e2e_remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    key_json TEXT,                      -- NULL: a device without identity keys
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id) REFERENCES e2e_remote_users(user_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- m.direct_to_device message IDs per origin, for idempotence (retried transactions).
CREATE TABLE to_device_federation_seen (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, message_id)
) WITHOUT ROWID;
CREATE INDEX to_device_federation_seen_ts ON to_device_federation_seen(received_ts);

-- /user/devices serves each local user's latest change as their stream_id.
CREATE INDEX e2e_device_list_changes_user ON e2e_device_list_changes(user_id, stream_id);

-- Which device a change was about (NULL: cross-signing keys, or rows from before):
-- m.device_list_update EDUs name it, and chain each user's device changes by prev_id.
ALTER TABLE e2e_device_list_changes ADD COLUMN device_id TEXT;

DROP TRIGGER e2e_device_deleted;
CREATE TRIGGER e2e_device_deleted AFTER DELETE ON devices
BEGIN
    INSERT INTO e2e_device_list_changes (user_id, device_id) VALUES (OLD.user_id, OLD.device_id);
    DELETE FROM e2e_signatures
        WHERE target_user_id = OLD.user_id AND target_key_id = OLD.device_id;
END;

-- How far our users' device list changes were handed to the federation sender.
CREATE TABLE federation_device_list_published (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
