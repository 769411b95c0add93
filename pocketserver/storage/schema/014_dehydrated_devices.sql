-- Dehydrated devices (MSC3814 "Dehydrated Devices with SSSS", unstable): at most one
-- per user. The device itself is an ordinary row of `devices` (it has device keys,
-- one-time and fallback keys and a to-device inbox like any device, but never an
-- access token); this table marks which device it is and keeps the client's
-- encrypted `device_data` (compact JSON).
-- Deleting the device (replacement, DELETE /dehydrated_device, /delete_devices,
-- logout/all, deactivation) deletes this row by cascade; the device's keys and inbox
-- go by the cascades and triggers of migrations 010 and 011.

CREATE TABLE dehydrated_devices (
    user_id TEXT NOT NULL PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
) WITHOUT ROWID;
