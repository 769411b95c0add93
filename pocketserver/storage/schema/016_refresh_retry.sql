-- Refreshing access tokens (client-server API "Refreshing access tokens"): the old
-- refresh token stays valid until the new access or refresh token is first used, so a
-- client whose /refresh answer was lost can repeat it. A new access token names the
-- one it replaces (by hash: IDs can be reused); first use of it or of its refresh
-- token deletes that one, and the old refresh token with it.
ALTER TABLE access_tokens ADD COLUMN replaces_token_hash BLOB;
CREATE INDEX access_tokens_replaces ON access_tokens(replaces_token_hash)
    WHERE replaces_token_hash IS NOT NULL;
