-- Rate limits kept in the store, so that replicas sharing it share them too
-- (with SQLite they stay in memory; the tables exist on both backends).

-- A token bucket per limiter and key, e.g. "login-ip|198.51.100.7".
CREATE TABLE rate_limits (
    key         TEXT PRIMARY KEY NOT NULL,
    tokens      REAL NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX rate_limits_updated_at ON rate_limits (updated_at);

-- Addresses that signed in to an account ("email|address"): they skip the
-- account-wide limit on failed logins.
CREATE TABLE known_addresses (
    pair     TEXT PRIMARY KEY NOT NULL,
    seen_at  INTEGER NOT NULL
);
CREATE INDEX known_addresses_seen_at ON known_addresses (seen_at);
