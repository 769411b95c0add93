-- The media repository: local uploads and their thumbnails (client-server API
-- "Content repository"). File contents live in the media store, named by their
-- SHA-256, so identical uploads are stored once; a file is deleted when no row
-- of local_media names it any more.

CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,      -- [A-Za-z0-9_-]+
    user_id TEXT NOT NULL,          -- the uploader (or the creator of a pending upload)
    created_ts INTEGER NOT NULL,
    expires_ts INTEGER,             -- pending (POST /create): unused after this time
    uploaded_ts INTEGER,            -- NULL while pending
    content_type TEXT,
    upload_name TEXT,
    size INTEGER,
    sha256 TEXT                     -- NULL while pending
) WITHOUT ROWID;

CREATE INDEX local_media_by_user ON local_media (user_id, uploaded_ts);
CREATE INDEX local_media_by_sha256 ON local_media (sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX local_media_pending ON local_media (expires_ts) WHERE sha256 IS NULL;
CREATE INDEX local_media_by_upload_time ON local_media (uploaded_ts) WHERE sha256 IS NOT NULL;

-- Thumbnails belong to the content (sha256), not to a media ID.
CREATE TABLE media_thumbnails (
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,         -- the box asked for (a configured or requested size)
    height INTEGER NOT NULL,
    method TEXT NOT NULL,           -- crop or scale
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (sha256, width, height, method, content_type)
) WITHOUT ROWID;
