-- Media of other servers, fetched over federation and cached (server-server API
-- "Content Repository"). The bytes live in the media store beside local uploads,
-- named by their SHA-256 (a file is deleted when neither local_media nor
-- remote_media names it any more); thumbnails belong to the content, as for uploads.

CREATE TABLE remote_media (
    origin TEXT NOT NULL,           -- the server name of the mxc:// URI
    media_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    upload_name TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    fetched_ts INTEGER NOT NULL,
    last_access_ts INTEGER NOT NULL, -- media_retention.remote_media_lifetime counts from here
    PRIMARY KEY (origin, media_id)
) WITHOUT ROWID;

CREATE INDEX remote_media_by_sha256 ON remote_media (sha256);
CREATE INDEX remote_media_by_access ON remote_media (last_access_ts);
