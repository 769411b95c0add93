-- Other servers' signing keys (the keyring's store, and what the notary answers
-- with): one row per server and key ID, from the newest answer that listed the key.
-- valid_until_ts: for a current key, the published valid_until_ts capped at 7 days
-- after added_ts; for an old key, its expired_ts. key_json: the whole signed
-- answer that listed the key, as received (a notary serves it on).
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key BLOB NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    from_server TEXT NOT NULL,
    added_ts INTEGER NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
) WITHOUT ROWID;
