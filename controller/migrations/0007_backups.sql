-- tikfleet controller schema, version 7: router backups.
--
-- Agents upload each backup file (`export`: the `/export` text; `binary`: the router's
-- encrypted `/system/backup/save` file) as outbox records of at most 256 KiB. Parts are
-- staged in `backup_chunks` until the last one arrives; the assembled file's size and SHA-256
-- are checked, its bytes go to `backup_blobs` (content-addressed per router, so a text export
-- identical to the previous one is not stored twice) and a row to `backups`. Bytes are
-- base64 text, which SQLite and PostgreSQL both store the same way.
CREATE TABLE backup_chunks (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    chunk_offset BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, kind, chunk_offset)
);

CREATE TABLE backup_blobs (
    router_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (router_id, sha256)
);

-- `unchanged` = 1: a text export whose configuration (the export without its dated first
-- line) equals the router's previous export; its bytes are that export's blob.
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    router_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    ros_version TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    config_sha256 TEXT NOT NULL,
    blob_sha256 TEXT NOT NULL,
    unchanged BIGINT NOT NULL DEFAULT 0,
    UNIQUE (job_id, kind)
);
CREATE INDEX backups_router ON backups (router_id, taken_at);

-- Retention per tenant: the newest backup of each of the last N days and of each of the
-- last M months is kept (NULL = the defaults, 30 and 12).
ALTER TABLE tenants ADD COLUMN backup_keep_daily BIGINT;
ALTER TABLE tenants ADD COLUMN backup_keep_monthly BIGINT;
