-- OpenID tokens (client-server API "OpenID"): a user proves who they are to a third
-- party (a widget, an integration manager), which checks the token with
-- GET /_matrix/federation/v1/openid/userinfo. Kept as SHA-256 hashes, for an hour.
CREATE TABLE openid_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    expires_ts INTEGER NOT NULL
);
CREATE INDEX openid_tokens_user ON openid_tokens(user_id, created_ts);
CREATE INDEX openid_tokens_expiry ON openid_tokens(expires_ts);

-- The user agent of each device's last request, beside its address and time, for
-- GET /admin/whois/{userId} (whose connections carry ip, last_seen and user_agent).
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;
