-- Credential rotation and API lockdown (issue 8): per-tenant settings. A tenant without a row
-- rotates every 90 days and has no admin networks.
CREATE TABLE security_settings (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    -- Days between scheduled credential rotations of each router; 0 turns the schedule off.
    rotation_days BIGINT NOT NULL,
    -- JSON array of networks (`10.0.0.0/24`) a lockdown allows besides the agent.
    admin_networks TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- The scheduler looks up each router's last rotation job.
CREATE INDEX jobs_router_kind ON jobs (router_id, kind, created_at);
