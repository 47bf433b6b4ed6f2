-- tikfleet controller schema, version 9: alert rules and alerts (issue 8).
--
-- One row per incident: opened `firing` when a rule's condition starts to hold for a subject
-- (`subject_key`: the router, agent or job it is about), `resolved` when it stops. The
-- partial unique index keeps at most one firing alert per tenant, rule and subject, so two
-- evaluations (or two controllers) cannot open the same incident twice. `last_notified_at`
-- and `reminders` drive the reminder notices; an acknowledged alert gets no more reminders.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    router_id TEXT,
    agent_id TEXT,
    rule TEXT NOT NULL,
    subject_key TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    summary TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    resolved_at BIGINT,
    last_notified_at BIGINT NOT NULL,
    reminders BIGINT NOT NULL DEFAULT 0,
    acknowledged_at BIGINT,
    acknowledged_by TEXT
);
CREATE UNIQUE INDEX alerts_firing ON alerts (tenant_id, rule, subject_key) WHERE state = 'firing';
CREATE INDEX alerts_tenant ON alerts (tenant_id, id);

-- The auth_failure rule reads a tenant's recent failed commands.
CREATE INDEX audit_tenant_errors ON audit (tenant_id, at) WHERE error IS NOT NULL;

-- Per-tenant rule settings (JSON, `AlertRules`); NULL: the defaults.
ALTER TABLE tenants ADD COLUMN alert_rules TEXT;
