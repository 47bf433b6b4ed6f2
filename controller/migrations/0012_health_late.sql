-- tikfleet controller schema, version 12: health samples that arrive late.
--
-- A sample whose 5-minute bucket was already rolled up (its agent was offline, or its
-- outbox held it, for longer than the bucket) is stored raw as usual and its bucket noted
-- here; the next maintenance run (controller/src/db/health.rs) rolls that bucket up again
-- — from all its raw samples while they are kept, by adding the late ones to the rollup
-- once the bucket's on-time samples have been deleted — and removes the note.
CREATE TABLE health_late (
    router_id TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    PRIMARY KEY (router_id, bucket)
);
