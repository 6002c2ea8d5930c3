-- Fleet notifications (issue #15): one incident row per worker, the state
-- the notices follow from. Every replica sees every fleet change; the row is
-- read and written in one write transaction (serialised on both backends),
-- and a notice's outbox rows are written in that same transaction, so each
-- notice is written once however many replicas saw its cause.
CREATE TABLE worker_incidents (
    worker_id            TEXT PRIMARY KEY NOT NULL,
    -- The worker's updated_at of the last change applied (Unix ms): an
    -- older view of the worker (a relayed event read late) is ignored.
    observed_at          INTEGER NOT NULL,
    -- When the current outage began; NULL while the stream is up.
    offline_since        INTEGER,
    -- The current outage was announced: back online is announced too.
    offline_notified     BOOLEAN NOT NULL DEFAULT FALSE,
    -- When the worker turned NOT_READY; NULL while it is not.
    not_ready_since      INTEGER,
    not_ready_notified   BOOLEAN NOT NULL DEFAULT FALSE,
    -- The flap window after an offline notice: outages begun before it
    -- ends are counted and reported in one summary when it ends.
    flap_window_start    INTEGER,
    flap_window_end      INTEGER,
    flap_outages         INTEGER NOT NULL DEFAULT 0,
    -- The earliest deadline above (a grace or the window's end), for the
    -- timer; NULL when nothing is due.
    due_at               INTEGER
);
CREATE INDEX worker_incidents_due ON worker_incidents (due_at);
