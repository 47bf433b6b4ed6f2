-- tikfleet controller schema, version 4: drift detection.
--
-- Each tenant chooses what its agents do about managed router items that drifted from the
-- desired state (`enforce`: put them back and report; `report`: flag them for staff) and how
-- often they check (seconds; 0 = only when staff ask). Both travel in every router's desired
-- state, so changing them bumps the generation of each of the tenant's routers.
ALTER TABLE tenants ADD COLUMN drift_policy TEXT NOT NULL DEFAULT 'enforce';
ALTER TABLE tenants ADD COLUMN drift_interval_secs BIGINT NOT NULL DEFAULT 3600;

-- A long reconcile's progress as the agent reports it (NULL until the first report), the
-- administrator-made items that blocked the last pass, and when the router was last compared
-- with its desired state in full.
ALTER TABLE routers ADD COLUMN progress_generation BIGINT;
ALTER TABLE routers ADD COLUMN progress_done BIGINT;
ALTER TABLE routers ADD COLUMN progress_total BIGINT;
ALTER TABLE routers ADD COLUMN progress_at BIGINT;
ALTER TABLE routers ADD COLUMN conflicts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE routers ADD COLUMN last_drift_check_at BIGINT;

-- One row per difference between a router and its desired state: a field of an item
-- (`field` is the RouterOS field name, '' for the whole item, so the unique index below can
-- name it), the values on both sides (passwords never: both read <redacted>), and what
-- became of it. `status`: open (staff to decide), enforcing (an enforce job is on its way),
-- and the resolved ones: corrected (the agent put it back), accepted (staff took the
-- router's value), gone (a later check no longer found it), resolved (the enforce job's
-- check no longer found it). `action` is what the agent last did about it; `check_id` the
-- last check that reported it; `job_id` the last enforce job.
CREATE TABLE drift_items (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    router_id TEXT NOT NULL REFERENCES routers (id),
    kind TEXT NOT NULL,
    item_key TEXT NOT NULL,
    field TEXT NOT NULL,
    router_value TEXT,
    desired_value TEXT,
    managed BIGINT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    check_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    resolved_at BIGINT,
    resolved_by TEXT,
    job_id TEXT
);
CREATE INDEX drift_items_tenant ON drift_items (tenant_id, id);
CREATE INDEX drift_items_tenant_status ON drift_items (tenant_id, status, id);
CREATE INDEX drift_items_router ON drift_items (router_id, status, id);
-- At most one unresolved item per router, item and field: a finding updates it in place.
CREATE UNIQUE INDEX drift_items_unresolved ON drift_items (router_id, kind, item_key, field)
    WHERE status IN ('open', 'enforcing');

-- The router's desired generation made by the same change as a job (NULL for jobs no change
-- made: drift checks, enforce). The agent's reconciler leaves a job's items alone in passes
-- over older states, since jobs and states may reach it in either order.
ALTER TABLE jobs ADD COLUMN generation BIGINT;
