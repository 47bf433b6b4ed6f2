-- tikfleet controller schema, version 2: job cancels and job order on the agent.
--
-- A job staff cancel may already be on its agent (delivered_at set, or on the wire). The hub
-- pushes a job_cancel for every cancelled job until the agent acknowledges it; then
-- cancel_delivered_at is set. A re-queue clears it, so a later cancel goes out again.
ALTER TABLE jobs ADD COLUMN cancel_delivered_at BIGINT;

-- The agent runs a router's jobs by priority and several at a time, so two jobs on the same
-- router item could run in either order. order_key names the item a job changes
-- (`account:ppp:alice`, `profile:ppp:gold`); after_key an item it needs to exist first (an
-- account's profile). The hub delivers a job only once every earlier job of its router with
-- the same order_key, or with its after_key as order_key, has finished. NULL: no order.
ALTER TABLE jobs ADD COLUMN order_key TEXT;
ALTER TABLE jobs ADD COLUMN after_key TEXT;
CREATE INDEX jobs_router_order ON jobs (router_id, order_key);
