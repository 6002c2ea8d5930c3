-- Worker identity (#12).
--
-- Machines an administrator removed (DeleteWorker) stay out: Enroll for a
-- machine id listed here is refused until an administrator readmits it
-- (ReadmitMachine, or a token bound to the machine id, which readmits it
-- when used). Written in the same transaction as the delete.
CREATE TABLE removed_machines (
    machine_id  TEXT PRIMARY KEY,
    -- The deleted worker (its certificate named it).
    worker_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    removed_by  TEXT,
    removed_at  BIGINT NOT NULL
);

-- A token bound to a machine id is an administrator's approval to (re-)enroll
-- exactly that machine; NULL admits only machines never seen.
ALTER TABLE enrollment_tokens ADD COLUMN machine_id TEXT;
