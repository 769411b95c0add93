-- End-to-end encryption keys (client-server API modules/end_to_end_encryption.md):
-- device identity keys, one-time and fallback keys, cross-signing keys, signatures
-- uploaded with /keys/signatures/upload, and the device list stream.
-- Device, one-time and fallback keys go with their device (foreign key cascade), so
-- every way of deleting a device (logout, delete_devices, deactivation) drops them.

CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,             -- the uploaded object, canonical JSON
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- id grows with upload order: keys are claimed oldest first.
CREATE TABLE e2e_one_time_keys (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    UNIQUE (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys(user_id, device_id, algorithm, id);

CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- usage: 'master', 'self_signing' or 'user_signing'; public_key is the unpadded base64
-- ed25519 key (also the key's ID after "ed25519:").
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    usage TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, usage)
) WITHOUT ROWID;

-- Signatures from /keys/signatures/upload. target_key_id is a device ID, or the public
-- key of a master key; signer_key_id is "ed25519:<device ID or public key>".
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
) WITHOUT ROWID;

-- The device list stream: one row per change of a user's devices, device keys or
-- cross-signing keys. /sync and /keys/changes read the rows between two positions.
CREATE TABLE e2e_device_list_changes (
    stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL
);

-- A deleted device changes its user's device list, and signatures of it go with it.
CREATE TRIGGER e2e_device_deleted AFTER DELETE ON devices
BEGIN
    INSERT INTO e2e_device_list_changes (user_id) VALUES (OLD.user_id);
    DELETE FROM e2e_signatures
        WHERE target_user_id = OLD.user_id AND target_key_id = OLD.device_id;
END;
