-- Backups and restores of subscriptions' volumes (issue #26).
--
-- backup_destinations: S3-compatible buckets; `credentials` is the access
-- key id and secret, sealed with the operator's key (sealed.rs, row id =
-- the destination's id).
CREATE TABLE backup_destinations (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    endpoint     TEXT NOT NULL,
    region       TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    credentials  TEXT NOT NULL,
    is_default   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   INTEGER NOT NULL
);
-- One repository per customer and destination, under a password of its
-- own (sealed, row id = '<user id>/<destination id>').
CREATE TABLE backup_keys (
    user_id         TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    password        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, destination_id)
);
-- A backup of a subscription. `manifest` is what rebuilds it (template
-- version, variables, generated secrets), sealed (row id = the backup's
-- id). No foreign key to subscriptions: a backup outlives its
-- subscription.
CREATE TABLE backups (
    id                 TEXT PRIMARY KEY NOT NULL,
    subscription_id    TEXT NOT NULL,
    subscription_name  TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    destination_id     TEXT NOT NULL,
    service_version    TEXT NOT NULL,
    manifest           TEXT NOT NULL,
    -- EXPIRING: a scheduled backup past its retention, being forgotten
    -- at the destination; its row goes once that is done.
    status             TEXT NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETE', 'FAILED', 'EXPIRING')),
    reason             TEXT NOT NULL DEFAULT '',
    -- MANUAL (CreateBackup) or SCHEDULE (removed by the retention).
    trigger_kind       TEXT NOT NULL DEFAULT 'MANUAL' CHECK (trigger_kind IN ('MANUAL', 'SCHEDULE')),
    created_at         INTEGER NOT NULL,
    started_at         INTEGER NOT NULL DEFAULT 0,
    finished_at        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX backups_subscription ON backups (subscription_id, created_at);
CREATE INDEX backups_user ON backups (user_id, created_at);
CREATE INDEX backups_status ON backups (status);
-- A restore of a backup into a subscription.
CREATE TABLE restores (
    id               TEXT PRIMARY KEY NOT NULL,
    backup_id        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETE', 'FAILED')),
    reason           TEXT NOT NULL DEFAULT '',
    -- A restore drill: into a scratch subscription, with the archive
    -- checked and the app waited for, then the scratch copy deleted.
    drill            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER NOT NULL DEFAULT 0,
    finished_at      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX restores_status ON restores (status);
-- One volume's copy, for a backup (job_id = the backup's id) or a restore
-- (job_id = the restore's id), done by the agent of `worker_id`.
CREATE TABLE volume_transfers (
    id                 TEXT PRIMARY KEY NOT NULL,
    job_id             TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('BACKUP', 'RESTORE', 'FORGET', 'CHECK')),
    claim              TEXT NOT NULL,
    worker_id          TEXT NOT NULL,
    volume_path        TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('PENDING', 'RUNNING', 'DONE', 'FAILED')),
    snapshot_id        TEXT NOT NULL DEFAULT '',
    bytes_done         INTEGER NOT NULL DEFAULT 0,
    bytes_total        INTEGER NOT NULL DEFAULT 0,
    seconds_remaining  INTEGER NOT NULL DEFAULT -1,
    bytes_added        INTEGER NOT NULL DEFAULT 0,
    error              TEXT NOT NULL DEFAULT '',
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX volume_transfers_job ON volume_transfers (job_id);
CREATE INDEX volume_transfers_worker ON volume_transfers (worker_id, state);
-- A subscription held stopped by a backup or a restore (the reconciler
-- renders it with no replicas while the row exists).
CREATE TABLE subscription_holds (
    subscription_id  TEXT PRIMARY KEY NOT NULL,
    job_id           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);
-- A subscription's daily backup (UTC hour:minute) and its retention.
CREATE TABLE backup_schedules (
    subscription_id    TEXT PRIMARY KEY NOT NULL,
    user_id            TEXT NOT NULL,
    hour               INTEGER NOT NULL,
    minute             INTEGER NOT NULL,
    keep_daily         INTEGER NOT NULL,
    keep_weekly        INTEGER NOT NULL,
    next_at            INTEGER NOT NULL,
    failures_in_a_row  INTEGER NOT NULL DEFAULT 0,
    -- A restore drill of the newest complete backup every week.
    weekly_drill       BOOLEAN NOT NULL DEFAULT FALSE,
    last_drill_at      INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX backup_schedules_next ON backup_schedules (next_at);
