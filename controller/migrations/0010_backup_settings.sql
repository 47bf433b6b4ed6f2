-- tikfleet controller schema, version 10: per-tenant backup settings (issue 8).
--
-- One JSON object per tenant (`BackupSettings` in controller/src/db/backups.rs): the schedule
-- of `backup_now` jobs (enabled, interval, optional time of day and window, UTC) and the
-- retention (`keep_daily`, `keep_monthly`). NULL, or a field left out: the defaults (daily,
-- 30 daily and 12 monthly backups kept). It replaces the two retention columns of version 7,
-- whose values (never settable through the API) are carried over, brought into the ranges
-- the settings allow (keep_daily 1 to 3660, keep_monthly 0 to 1200).
ALTER TABLE tenants ADD COLUMN backup_settings TEXT;
UPDATE tenants SET backup_settings =
    '{"keep_daily":' || CAST(CASE
        WHEN backup_keep_daily IS NULL THEN 30
        WHEN backup_keep_daily < 1 THEN 1
        WHEN backup_keep_daily > 3660 THEN 3660
        ELSE backup_keep_daily END AS TEXT)
    || ',"keep_monthly":' || CAST(CASE
        WHEN backup_keep_monthly IS NULL THEN 12
        WHEN backup_keep_monthly < 0 THEN 0
        WHEN backup_keep_monthly > 1200 THEN 1200
        ELSE backup_keep_monthly END AS TEXT) || '}'
    WHERE backup_keep_daily IS NOT NULL OR backup_keep_monthly IS NOT NULL;
ALTER TABLE tenants DROP COLUMN backup_keep_daily;
ALTER TABLE tenants DROP COLUMN backup_keep_monthly;

