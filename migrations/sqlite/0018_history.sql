-- Metric history for charts (issue #23). Written by the history recorder in
-- batches, never per heartbeat: one row per worker per fine step (1 minute
-- by default) and per coarse step (1 hour), pruned after their retention.
-- Values are sums, so two writes of one point (a late heartbeat, a worker
-- that moved to another replica mid-step) add up: the mean is sum / samples.
CREATE TABLE worker_history (
    worker_id      TEXT NOT NULL,
    step_ms        INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    cpu_percent    REAL NOT NULL,
    memory_used    REAL NOT NULL,
    memory_total   REAL NOT NULL,
    storage_used   REAL NOT NULL,
    storage_total  REAL NOT NULL,
    PRIMARY KEY (worker_id, step_ms, at)
);
CREATE INDEX worker_history_age ON worker_history (step_ms, at);

-- The fleet: per fine step, the sums over the workers that reported of
-- their means (replicas add their own workers); per coarse step, the mean
-- of the fine rows of that step.
CREATE TABLE fleet_history (
    step_ms        INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    workers        REAL NOT NULL,
    cpu_percent    REAL NOT NULL,
    memory_used    REAL NOT NULL,
    memory_total   REAL NOT NULL,
    storage_used   REAL NOT NULL,
    storage_total  REAL NOT NULL,
    PRIMARY KEY (step_ms, at)
);

-- A subscription's status and its containers' restart count, one row each
-- time either changed (seen at most once per fine step).
CREATE TABLE subscription_history (
    subscription_id TEXT NOT NULL,
    at              INTEGER NOT NULL,
    status          TEXT NOT NULL,
    restarts        INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, at)
);
CREATE INDEX subscription_history_age ON subscription_history (at);
