-- Versions of a catalog entry and upgrades that roll back (issue #25).
--
-- Each published template of an entry is kept under its version, with its
-- release notes, whether an upgrade to it cannot be rolled back past
-- (one_way: a data migration) and when it was withdrawn (no new
-- subscriptions; running ones are told to move). services.template and
-- services.version stay the entry's newest version that is not withdrawn.
CREATE TABLE service_versions (
    service_id    TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    version       TEXT NOT NULL,
    -- The minispod.v1.ServiceTemplate, prost-encoded.
    template      BYTEA NOT NULL,
    notes         TEXT NOT NULL DEFAULT '',
    one_way       BOOLEAN NOT NULL DEFAULT FALSE,
    -- Unix ms; NULL while offered.
    withdrawn_at  BIGINT,
    published_at  BIGINT NOT NULL,
    PRIMARY KEY (service_id, version)
);
-- Every entry with a template has its current template as a version.
INSERT INTO service_versions (service_id, version, template, notes, one_way, withdrawn_at, published_at)
    SELECT id, version, template, '', FALSE, NULL, updated_at FROM services WHERE template IS NOT NULL;

-- The version a subscription runs: existing ones get the version whose
-- template their copy is ('' when the entry's template changed since).
ALTER TABLE subscriptions ADD COLUMN version TEXT NOT NULL DEFAULT '';
UPDATE subscriptions SET version = COALESCE((SELECT v.version FROM service_versions v
    WHERE v.service_id = subscriptions.service_id AND v.template = subscriptions.template), '');
-- While an upgrade rolls out (status UPGRADING): the version, template,
-- variables (sealed as `variables`) and status it came from, kept until it
-- succeeds or is rolled back, and when it must be ready by (Unix ms).
ALTER TABLE subscriptions ADD COLUMN previous_version TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN previous_template BYTEA;
ALTER TABLE subscriptions ADD COLUMN previous_variables TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN previous_status TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN upgrade_deadline_at BIGINT NOT NULL DEFAULT 0;
-- Why the last upgrade was rolled back; '' after one that succeeded.
ALTER TABLE subscriptions ADD COLUMN upgrade_failure TEXT NOT NULL DEFAULT '';

-- status may be UPGRADING (and defaults to PENDING, as SQLite's copied
-- column must).
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_status_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_status_check
    CHECK (status IN ('PENDING', 'PROVISIONING', 'RUNNING', 'DEGRADED', 'SUSPENDED', 'DELETING', 'FAILED', 'UPGRADING'));
ALTER TABLE subscriptions ALTER COLUMN status SET DEFAULT 'PENDING';
