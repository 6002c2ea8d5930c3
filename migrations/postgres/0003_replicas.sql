-- Control-plane replicas and the agent streams they hold.
--
-- Each replica records itself here under a lease it renews; a worker's
-- live stream names its replica and its stream. When a replica dies without
-- cleaning up, the others see its lease lapse and take its workers offline.
-- With SQLite there is one replica, which at start-up forgets any other.

CREATE TABLE replicas (
    id                TEXT PRIMARY KEY,
    -- Unix ms after which this replica's streams are presumed dead.
    lease_expires_at  BIGINT NOT NULL,
    started_at        BIGINT NOT NULL
);

-- The replica holding the worker's stream, and that stream; both NULL while
-- offline. Only the stream named here may mark the worker offline.
ALTER TABLE workers ADD COLUMN stream_replica TEXT;
ALTER TABLE workers ADD COLUMN stream_id TEXT;
CREATE INDEX workers_stream_replica ON workers (stream_replica);
