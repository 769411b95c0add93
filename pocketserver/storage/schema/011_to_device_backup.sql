-- Send-to-device messages (client-server API modules/send_to_device.md) and server-side
-- key backups (modules/end_to_end_encryption.md "Server-side key backups").

-- Each device's inbox. stream_id is the to-device stream position of the request that
-- queued the message (one request sends at most one message per device, so it is
-- unique per device). Rows are deleted once the device syncs with a token at or past
-- them, and with the device (trigger below).
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
) WITHOUT ROWID;

-- The to-device stream position only grows (one counter row, bumped by each send).
CREATE TABLE to_device_stream (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
INSERT INTO to_device_stream (id, position) VALUES (1, 0);

-- Transaction IDs of sendToDevice requests (idempotent retries), pruned by age.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, event_type, txn_id)
) WITHOUT ROWID;
CREATE INDEX to_device_txns_age ON to_device_txns(created_ts);

-- A deleted device (however it is deleted: logout, device API, deactivation, user
-- removal) takes its inbox and its transaction IDs with it.
CREATE TRIGGER to_device_forget_device AFTER DELETE ON devices
BEGIN
    DELETE FROM to_device_inbox WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
    DELETE FROM to_device_txns WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
END;

-- Key backup versions, per user, numbered from 1 and never reused. A deleted version
-- keeps its row (deleted = 1) so deleting it again succeeds; its keys are deleted.
-- etag counts changes to the version's keys; key_count is the number of keys.
CREATE TABLE key_backup_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 0,
    key_count INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
) WITHOUT ROWID;

CREATE TABLE key_backup_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES key_backup_versions(user_id, version)
        ON DELETE CASCADE
) WITHOUT ROWID;
