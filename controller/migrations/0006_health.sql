-- tikfleet controller schema, version 6: router health samples and versions.
--
-- Raw probe samples (one row per router sample, as the agents send them every 30 s by
-- default), kept 48 hours; 5-minute rollups of them, kept 90 days. The retention task
-- (controller/src/db/health.rs) rolls each complete 5-minute bucket up once, behind a
-- watermark, before raw rows are deleted. Counters are cumulative since boot; rx/tx are the
-- sums over the router's interfaces at the sample.
CREATE TABLE health_samples (
    router_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    cpu BIGINT NOT NULL,
    mem_free BIGINT NOT NULL,
    mem_total BIGINT NOT NULL,
    uptime BIGINT NOT NULL,
    disk_free BIGINT NOT NULL,
    disk_total BIGINT NOT NULL,
    ppp BIGINT NOT NULL,
    hotspot BIGINT NOT NULL,
    rx_bytes BIGINT NOT NULL,
    tx_bytes BIGINT NOT NULL
);
CREATE INDEX health_samples_router ON health_samples (router_id, at);
CREATE INDEX health_samples_at ON health_samples (at);

-- `bucket` is the start of the 5 minutes (Unix ms, a multiple of 300000). Averages are
-- `*_sum / samples`.
CREATE TABLE health_rollups (
    router_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    cpu_sum BIGINT NOT NULL,
    cpu_max BIGINT NOT NULL,
    mem_free_min BIGINT NOT NULL,
    mem_free_sum BIGINT NOT NULL,
    mem_total BIGINT NOT NULL,
    uptime_max BIGINT NOT NULL,
    disk_free_min BIGINT NOT NULL,
    disk_total BIGINT NOT NULL,
    ppp_max BIGINT NOT NULL,
    ppp_sum BIGINT NOT NULL,
    hotspot_max BIGINT NOT NULL,
    hotspot_sum BIGINT NOT NULL,
    rx_bytes_max BIGINT NOT NULL,
    tx_bytes_max BIGINT NOT NULL,
    PRIMARY KEY (router_id, bucket)
);
CREATE INDEX health_rollups_bucket ON health_rollups (bucket);

-- Small named values of the health task (`rollup_watermark`: every bucket before it is
-- rolled up).
CREATE TABLE health_state (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- What the last probe and version check said, on the router's row.
ALTER TABLE routers ADD COLUMN last_seen BIGINT;
ALTER TABLE routers ADD COLUMN uptime_secs BIGINT;
ALTER TABLE routers ADD COLUMN ros_channel TEXT;
ALTER TABLE routers ADD COLUMN ros_latest TEXT;
ALTER TABLE routers ADD COLUMN update_available BIGINT;
ALTER TABLE routers ADD COLUMN update_error TEXT;
ALTER TABLE routers ADD COLUMN firmware_current TEXT;
ALTER TABLE routers ADD COLUMN firmware_upgrade TEXT;
ALTER TABLE routers ADD COLUMN firmware_outdated BIGINT;
ALTER TABLE routers ADD COLUMN board TEXT;
ALTER TABLE routers ADD COLUMN versions_at BIGINT;
-- 1 when the RouterOS version is older than the supported minimum (6.43).
ALTER TABLE routers ADD COLUMN ros_unsupported BIGINT;
