-- tikfleet controller schema, version 1.
--
-- One file for SQLite and PostgreSQL alike: ids are TEXT (hyphenated UUIDs), integers and
-- times BIGINT (times in Unix milliseconds), booleans BIGINT 0/1, ciphertext base64 TEXT and
-- structured values JSON TEXT, so sqlx's Any driver binds and decodes every column the same
-- way on both.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX tenants_name ON tenants (name);

-- Staff bearer tokens, stored as SHA-256 hashes only. tenant_id is NULL for admins.
CREATE TABLE staff_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id),
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX staff_tokens_hash ON staff_tokens (token_hash);
CREATE INDEX staff_tokens_tenant ON staff_tokens (tenant_id, id);

-- One-time, expiring enrollment tokens, stored hashed.
CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    token_hash TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    used_by TEXT
);
CREATE UNIQUE INDEX enrollment_tokens_hash ON enrollment_tokens (token_hash);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    seal_key TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    connected BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT,
    records_committed BIGINT NOT NULL DEFAULT 0,
    telemetry_records BIGINT NOT NULL DEFAULT 0,
    drift_records BIGINT NOT NULL DEFAULT 0,
    dropped_records BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX agents_tenant ON agents (tenant_id, id);

-- Ed25519 identity keys; a rotation retires the old key at once.
CREATE TABLE agent_keys (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    PRIMARY KEY (agent_id, key_id)
);

-- Routers are never deleted: a deleted router stays as a tombstone (deleted_at) so its agent
-- learns to forget it.
CREATE TABLE routers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    agent_id TEXT NOT NULL REFERENCES agents (id),
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    api_port BIGINT NOT NULL,
    ssh_port BIGINT NOT NULL,
    tls TEXT NOT NULL,
    username TEXT NOT NULL,
    sealed_password TEXT NOT NULL,
    ros_version TEXT,
    status TEXT NOT NULL,
    revision BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    stored_generation BIGINT NOT NULL DEFAULT 0,
    applied_generation BIGINT NOT NULL DEFAULT 0,
    apply_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX routers_tenant ON routers (tenant_id, id);
CREATE INDEX routers_agent ON routers (agent_id);
CREATE UNIQUE INDEX routers_name ON routers (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    rate_limit TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX plans_name ON plans (tenant_id, name);
CREATE UNIQUE INDEX plans_profile ON plans (tenant_id, profile);
CREATE INDEX plans_tenant ON plans (tenant_id, id);

-- password is XChaCha20-Poly1305 ciphertext (base64) under the controller's at-rest key.
CREATE TABLE subscribers (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    router_id TEXT NOT NULL REFERENCES routers (id),
    plan_id TEXT NOT NULL REFERENCES plans (id),
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    service TEXT NOT NULL,
    expires_at BIGINT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscribers_tenant ON subscribers (tenant_id, id);
CREATE INDEX subscribers_router ON subscribers (router_id);
CREATE INDEX subscribers_plan ON subscribers (plan_id);
CREATE UNIQUE INDEX subscribers_account ON subscribers (router_id, service, username);

-- op is the JobOp as JSON, encrypted at rest (it can hold a subscriber's password).
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    router_id TEXT NOT NULL REFERENCES routers (id),
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    priority TEXT NOT NULL,
    max_attempts BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    progress_done BIGINT NOT NULL DEFAULT 0,
    progress_total BIGINT NOT NULL DEFAULT 1,
    error TEXT,
    detail TEXT,
    delivered_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key);
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_router_delivery ON jobs (router_id, delivered_at);

-- Staff actions (agent_id NULL) and router commands reported by agents (agent_id, seq: each
-- outbox record is taken once).
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    tenant_id TEXT REFERENCES tenants (id),
    router_id TEXT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    agent_id TEXT,
    seq BIGINT,
    job_id TEXT,
    generation BIGINT,
    duration_ms BIGINT
);
CREATE INDEX audit_tenant ON audit (tenant_id, id);
CREATE UNIQUE INDEX audit_agent_seq ON audit (agent_id, seq);
