-- Accounts API: registration tokens, refresh tokens, erased users.

-- Synapse's registration tokens (admin API /_synapse/admin/v1/registration_tokens).
-- "pending" uses live only in memory (in UIA sessions, which do not survive a
-- restart); "completed" counts registrations that used the token.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,               -- NULL: unlimited
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time INTEGER                 -- milliseconds since the epoch, NULL: never
) WITHOUT ROWID;

-- A refresh token belongs to the access token issued with it: deleting that
-- access token (refresh, logout, device deletion, login with the same device ID)
-- deletes the refresh token too. Only the SHA-256 of the token is stored.
CREATE TABLE refresh_tokens (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    access_token_id INTEGER NOT NULL REFERENCES access_tokens(id) ON DELETE CASCADE,
    created_ts INTEGER NOT NULL,
    valid_until_ms INTEGER              -- NULL: until used
);
CREATE INDEX refresh_tokens_access_token ON refresh_tokens(access_token_id);

-- Users who deactivated with erase: true (client-server API "Account deactivation").
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY
) WITHOUT ROWID;
