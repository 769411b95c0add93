-- Pushers (client-server API "Push Notifications": POST /pushers/set) and nothing
-- else: pending deliveries live in memory only (see push/delivery.py).
--
-- A pusher belongs to the device whose access token set it: deleting the device
-- (logout, device deletion, password change with logout, deactivation) deletes its
-- pushers by cascade, as Synapse does.

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- 'http'
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data_json TEXT NOT NULL,            -- the client's data object, url included
    pushkey_ts INTEGER NOT NULL,        -- milliseconds; when it was last set
    PRIMARY KEY (user_id, app_id, pushkey),
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX pushers_key ON pushers(app_id, pushkey);
CREATE INDEX pushers_device ON pushers(user_id, device_id);
