-- tikfleet controller schema, version 5: the subscriber lifecycle and notifications.
--
-- Lifecycle settings (notice days, grace profile and period, how suspension is done) are
-- JSON: per tenant (NULL = the defaults) and per plan (NULL = the tenant's; a plan's object
-- names only the fields it overrides). See controller/src/lifecycle.rs.
ALTER TABLE tenants ADD COLUMN lifecycle TEXT;
ALTER TABLE plans ADD COLUMN lifecycle TEXT;
-- Notification settings per tenant (SMTP, SMS gateway, templates, admin alerts) as JSON,
-- with the SMTP password and gateway headers sealed under the at-rest key.
ALTER TABLE tenants ADD COLUMN notifications TEXT;

-- Contact details for notices.
ALTER TABLE subscribers ADD COLUMN name TEXT;
ALTER TABLE subscribers ADD COLUMN email TEXT;
ALTER TABLE subscribers ADD COLUMN phone TEXT;
-- `status` is now active | grace | suspended: the phase last confirmed on the router (agents
-- report expiry transitions) or set by staff. `hold` = 1 is a manual suspension, which only
-- staff lift; `status_reason` (created, expiry, manual, renewal, resume) and `status_at` tell
-- why and when the status last changed.
ALTER TABLE subscribers ADD COLUMN hold BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscribers ADD COLUMN status_reason TEXT;
ALTER TABLE subscribers ADD COLUMN status_at BIGINT;
UPDATE subscribers SET hold = 1, status_reason = 'manual' WHERE status = 'suspended';
CREATE INDEX subscribers_expiry ON subscribers (expires_at);

-- Every lifecycle transition of a subscriber: by expiry (reported by the agent that applied
-- it, possibly long after, once its link came back), by staff (manual suspend, resume) or by
-- a renewal. An agent's report of a transition it already reported (it resends after a
-- crash) finds its row by (subscriber, phase, expires_at, reason) and changes nothing.
CREATE TABLE lifecycle_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    subscriber_id TEXT NOT NULL,
    router_id TEXT,
    phase TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires_at BIGINT,
    due_at BIGINT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    current BIGINT NOT NULL
);
CREATE UNIQUE INDEX lifecycle_events_once ON lifecycle_events (subscriber_id, phase, expires_at, reason)
    WHERE reason = 'expiry';
CREATE INDEX lifecycle_events_subscriber ON lifecycle_events (subscriber_id, at);
CREATE INDEX lifecycle_events_tenant ON lifecycle_events (tenant_id, at);

-- Outgoing notices (email, SMS) and admin alerts (email, webhook), rendered when queued.
-- `dedupe_key` makes each notice exactly one row however often it is queued (a restart, a
-- retried report), so none is sent twice. `status`: pending, sending (claimed by a sender
-- until `next_attempt_at`), sent, failed (gave up after the last attempt).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    subscriber_id TEXT,
    router_id TEXT,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE UNIQUE INDEX notifications_dedupe ON notifications (tenant_id, dedupe_key);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_subscriber ON notifications (subscriber_id, created_at);
