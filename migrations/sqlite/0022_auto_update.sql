-- Auto-update of patch versions in a maintenance window, and the
-- administrators' digest of subscriptions behind (issue #25).
--
-- A subscription's auto-update policy: while enabled, a newer patch version
-- is applied by itself when the current time (UTC) is inside the window
-- that opens on `days` at `start_minute` and stays open `length_minutes`.
CREATE TABLE subscription_auto_updates (
    subscription_id  TEXT PRIMARY KEY NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    enabled          BOOLEAN NOT NULL DEFAULT FALSE,
    -- Days the window opens on: bit 0 Monday ... bit 6 Sunday (UTC).
    days             INTEGER NOT NULL DEFAULT 0,
    -- Minute of the day (UTC) the window opens at, 0 to 1439.
    start_minute     INTEGER NOT NULL DEFAULT 0,
    -- How long it stays open, 1 to 10080 minutes.
    length_minutes   INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL
);
-- Partial, as the periodic check reads only the enabled ones.
CREATE INDEX subscription_auto_updates_enabled ON subscription_auto_updates (enabled)
    WHERE enabled;

-- Each version the auto-update started an upgrade to: written before the
-- upgrade starts (whichever replica writes it first starts it), so a
-- version is tried automatically at most once and one that rolled back
-- is not tried again by itself.
CREATE TABLE subscription_auto_update_tries (
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    version          TEXT NOT NULL,
    tried_at         INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, version)
);

-- When a periodic digest to the administrators was last sent (Unix ms),
-- by name ('versions_behind'), so a restart does not send it again
-- within its period and only one replica sends it.
CREATE TABLE notice_digests (
    name     TEXT PRIMARY KEY NOT NULL,
    sent_at  INTEGER NOT NULL
);
