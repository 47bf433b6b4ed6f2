-- tikfleet controller schema, version 11: each agent's latest host sample (issue 8).
--
-- The agent's own host and queues as its latest `host` telemetry sample reported them
-- (controller/src/db/agents.rs `store_host_sample`): shown in the agent view of the API and
-- read by the `outbox_near_cap` alert rule. `host_at` is the sample's time (NULL: none yet);
-- an older sample arriving late does not replace a newer one. `host_outbox_max` and
-- `host_telemetry_dropped` are NULL for agents that do not report them.
ALTER TABLE agents ADD COLUMN host_at BIGINT;
ALTER TABLE agents ADD COLUMN host_cpu BIGINT;
ALTER TABLE agents ADD COLUMN host_mem_free BIGINT;
ALTER TABLE agents ADD COLUMN host_mem_total BIGINT;
ALTER TABLE agents ADD COLUMN host_uptime BIGINT;
ALTER TABLE agents ADD COLUMN host_disk_free BIGINT;
ALTER TABLE agents ADD COLUMN host_disk_total BIGINT;
ALTER TABLE agents ADD COLUMN host_outbox_records BIGINT;
ALTER TABLE agents ADD COLUMN host_outbox_bytes BIGINT;
ALTER TABLE agents ADD COLUMN host_outbox_max BIGINT;
ALTER TABLE agents ADD COLUMN host_telemetry_dropped BIGINT;
ALTER TABLE agents ADD COLUMN host_queued_jobs BIGINT;
