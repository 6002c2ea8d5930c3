-- #26: a backup destination may be a directory on the control plane's host
-- instead of an S3-compatible bucket: `directory` is its absolute path
-- (empty for a bucket; a directory destination's S3 columns are empty and
-- its `credentials` seal nothing). Agents reach it through the control
-- plane's port (restic's REST protocol under /restic/).
ALTER TABLE backup_destinations ADD COLUMN directory TEXT NOT NULL DEFAULT '';
