-- tikfleet controller schema, version 13: where the reboot check left off, per router.
--
-- `reboot_detected` compares each sample with the one before it. The evaluator
-- (controller/src/db/alerts.rs) remembers the last sample it looked at, so samples that
-- arrive together (an agent back from an outage, an evaluation that ran late) are all
-- compared in order and a reboot among them is not missed; `rebooted` says whether that
-- sample is the first after a reboot (the alert holds until a later sample arrives).
CREATE TABLE reboot_marks (
    router_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    uptime BIGINT NOT NULL,
    rebooted BIGINT NOT NULL
);
CREATE INDEX reboot_marks_tenant ON reboot_marks (tenant_id);
