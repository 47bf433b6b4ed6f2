-- tikfleet controller schema, version 3: indexes for the agent hub at fleet scale.
--
-- The hub reads an agent's routers joined to the agent on its tenant
-- (`r.agent_id = $1 AND r.tenant_id = a.tenant_id`). With only `routers_agent (agent_id)` and
-- `routers_tenant (tenant_id, id)`, SQLite's planner (no statistics) chose the tenant index
-- and walked every router of the tenant for each agent: 7 ms per read with 10,000 routers,
-- and quadratic over a fleet reconnecting or taking a change. This index matches both
-- equalities and the order the hub reads in; it also serves every lookup by agent alone, so
-- it replaces `routers_agent`.
CREATE INDEX routers_agent_tenant ON routers (agent_id, tenant_id, id);
DROP INDEX routers_agent;
