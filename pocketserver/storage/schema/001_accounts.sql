-- Accounts, devices and access tokens.
-- Column names follow Synapse's where the concept is the same, so that the
-- README's password reset recipe (UPDATE users SET password_hash=...) is the same.

CREATE TABLE users (
    name TEXT PRIMARY KEY,              -- the full user ID, @localpart:server
    password_hash TEXT,                 -- bcrypt ($2b$...), NULL if no password login
    creation_ts INTEGER NOT NULL,       -- seconds since the epoch (as Synapse)
    admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    is_guest INTEGER NOT NULL DEFAULT 0,
    user_type TEXT
) WITHOUT ROWID;

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts INTEGER NOT NULL,        -- milliseconds
    last_seen_ts INTEGER,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
) WITHOUT ROWID;

-- Only the SHA-256 of each token is stored: a copy of the database does not
-- hand out working tokens.
CREATE TABLE access_tokens (
    id INTEGER PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    valid_until_ms INTEGER,
    FOREIGN KEY (user_id, device_id) REFERENCES devices(user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens(user_id, device_id);
