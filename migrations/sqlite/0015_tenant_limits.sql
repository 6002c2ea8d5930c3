-- Per-customer limits on what subscriptions may take (issue #22): an
-- administrator's overrides of the `--tenant-max-*` defaults. NULL: the
-- default applies.
CREATE TABLE tenant_limits (
    user_id         TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    subscriptions   INTEGER,
    cpu_millicores  INTEGER,
    memory_mb       INTEGER,
    storage_gb      INTEGER,
    updated_at      INTEGER NOT NULL
);

-- A retained volume's size counts against its owner's storage until it is
-- deleted; volumes retained before this migration count as 0.
ALTER TABLE retained_volumes ADD COLUMN size_gb INTEGER NOT NULL DEFAULT 0;
