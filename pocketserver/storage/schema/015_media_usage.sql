-- Bytes of media stored in each user's name, for media_upload_quota_per_user: read
-- in one lookup before and while an upload is recorded, instead of a sum over all of
-- the user's uploads. Kept by triggers, so every way a row of local_media is added,
-- completed or deleted (uploads, async uploads, retention, deactivation) keeps it
-- right, inside the same transaction. Each upload counts in full for its uploader,
-- even when its content is stored once; pending uploads (sha256 NULL) count nothing.

CREATE TABLE media_usage (
    user_id TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO media_usage (user_id, bytes)
    SELECT user_id, sum(coalesce(size, 0)) FROM local_media
    WHERE sha256 IS NOT NULL GROUP BY user_id;

CREATE TRIGGER media_usage_insert AFTER INSERT ON local_media
WHEN NEW.sha256 IS NOT NULL
BEGIN
    INSERT INTO media_usage (user_id, bytes) VALUES (NEW.user_id, coalesce(NEW.size, 0))
        ON CONFLICT (user_id) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER media_usage_update AFTER UPDATE OF user_id, size, sha256 ON local_media
BEGIN
    UPDATE media_usage SET bytes = bytes - coalesce(OLD.size, 0)
        WHERE user_id = OLD.user_id AND OLD.sha256 IS NOT NULL;
    INSERT INTO media_usage (user_id, bytes)
        SELECT NEW.user_id, coalesce(NEW.size, 0) WHERE NEW.sha256 IS NOT NULL
        ON CONFLICT (user_id) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER media_usage_delete AFTER DELETE ON local_media
WHEN OLD.sha256 IS NOT NULL
BEGIN
    UPDATE media_usage SET bytes = bytes - coalesce(OLD.size, 0) WHERE user_id = OLD.user_id;
END;
