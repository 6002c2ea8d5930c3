-- Customers are told (issue #25): one incident row per subscription, the
-- state its owner's notices follow from, read and written in the write
-- transaction that records the subscription's status (or at a deadline),
-- with the notices' outbox rows, so each notice is written once.
CREATE TABLE subscription_incidents (
    subscription_id  TEXT PRIMARY KEY NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    -- The owner and the name, as the notices at a deadline need them.
    user_id          TEXT NOT NULL,
    name             TEXT NOT NULL,
    -- The status last recorded, and its reason in the customer's words.
    status           TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    -- When the current outage (DEGRADED or FAILED) began; NULL when none.
    down_since       INTEGER,
    -- The current outage was told: its end is told too.
    down_notified    BOOLEAN NOT NULL DEFAULT FALSE,
    -- The flap window after a told outage (see worker_incidents).
    flap_window_start INTEGER,
    flap_window_end  INTEGER,
    flap_outages     INTEGER NOT NULL DEFAULT 0,
    -- The containers' restarts last seen, and when the latest ones were
    -- seen (Unix ms, comma-separated, at most --notify-crash-restarts).
    restarts         INTEGER NOT NULL DEFAULT 0,
    crash_marks      TEXT NOT NULL DEFAULT '',
    -- The current crash loop was told.
    crash_notified   BOOLEAN NOT NULL DEFAULT FALSE,
    -- The earliest deadline (a grace, the window's end, a crash spell's
    -- end); NULL when nothing is due.
    due_at           INTEGER
);
CREATE INDEX subscription_incidents_due ON subscription_incidents (due_at);

-- Thresholds on the workers' figures: worker_id '' for every worker, or a
-- worker's own (which wins for its metric).
CREATE TABLE worker_thresholds (
    worker_id            TEXT NOT NULL,
    metric               TEXT NOT NULL,
    above_percent        REAL NOT NULL,
    clear_below_percent  REAL NOT NULL,
    for_ms               INTEGER NOT NULL,
    PRIMARY KEY (worker_id, metric)
);

-- The thresholds crossed now: written only when one is crossed or clears,
-- so a crossing is told once (the insert that adds the row queues it).
CREATE TABLE worker_threshold_crossings (
    worker_id  TEXT NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
    metric     TEXT NOT NULL,
    since      INTEGER NOT NULL,
    percent    REAL NOT NULL,
    PRIMARY KEY (worker_id, metric)
);
