-- #26: backups a fresh control plane can import (ImportBackups), given the
-- operator's sealing key (`secrets.key`) and the destination.
--
-- Each customer's repository gets a second restic key whose password is
-- derived from the sealing key and the repository's path (`recovery.rs`).
-- `key_hint` is set when it is added ('' before): the id of the key the
-- random password opens, which restic tries first (RESTIC_KEY_HINT)
-- rather than spending a key derivation on the recovery key each time it
-- opens the repository.
ALTER TABLE backup_keys ADD COLUMN key_hint TEXT NOT NULL DEFAULT '';
-- Each complete backup's record (the sealed manifest, its volumes'
-- snapshots) is stored in the repository too, as a snapshot of its own:
-- `manifest_snapshot` is its id once stored ('' before), which a
-- retention's forget removes with the volumes' snapshots;
-- `manifest_claimed_at` is the replica storing it claiming the work (a
-- failed try is retried once the claim lapses).
ALTER TABLE backups ADD COLUMN manifest_snapshot TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN manifest_claimed_at BIGINT NOT NULL DEFAULT 0;
-- A backup imported from a repository another control plane made: the
-- path segment of that repository (the user id it had there). '' for a
-- backup taken here, whose repository is its owner's.
ALTER TABLE backups ADD COLUMN repository_user TEXT NOT NULL DEFAULT '';
-- The runner looks for records to store every second.
CREATE INDEX backups_record_pending ON backups (finished_at)
    WHERE status = 'COMPLETE' AND manifest_snapshot = '' AND repository_user = '';
