-- #26: a backup before a one-way upgrade or a deletion, downloads, and
-- components that keep running through a backup.
--
-- A backup may be followed by an action once it ends: `then_action`
-- UPGRADE (to `then_version`) or DELETE, done when it completes and not
-- when it fails; `then_done_at` is when that was done (0: not yet), so a
-- restart does it then.
ALTER TABLE backups ADD COLUMN then_action TEXT NOT NULL DEFAULT '' CHECK (then_action IN ('', 'UPGRADE', 'DELETE'));
ALTER TABLE backups ADD COLUMN then_version TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN then_done_at BIGINT NOT NULL DEFAULT 0;
-- The replica doing the follow-up claims it first (unix ms; a claim older
-- than a few minutes is taken over).
ALTER TABLE backups ADD COLUMN then_claimed_at BIGINT NOT NULL DEFAULT 0;
-- A link that downloads one volume of a backup: the token's SHA-256, used
-- once, before `expires_at` (unix ms).
CREATE TABLE backup_downloads (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    backup_id   TEXT NOT NULL,
    claim       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX backup_downloads_expiry ON backup_downloads (expires_at);
-- The components a backup's hold leaves running (their template says
-- BACKUP_MODE_LIVE), comma-separated; '' stops them all.
ALTER TABLE subscription_holds ADD COLUMN live TEXT NOT NULL DEFAULT '';
-- Whether the customer's repository at the destination exists: the
-- control plane creates it once, before the first transfer is ordered, so
-- that two volumes' first backups never both create it (two keys, one
-- config: one of them could not open it). `init_claimed_at` is the
-- replica that creates it claiming the work. Keys made before were
-- created by their agents.
ALTER TABLE backup_keys ADD COLUMN initialized BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE backup_keys ADD COLUMN init_claimed_at BIGINT NOT NULL DEFAULT 0;
UPDATE backup_keys SET initialized = TRUE;
