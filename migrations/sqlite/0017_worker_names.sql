-- Workers by name, re-registration, readiness and ordered watches (#23).
--
-- Names are unique among workers (a deleted worker's row is gone, so every
-- row is a live worker). Older databases may hold duplicates (a reinstalled
-- machine enrolled as a second worker of the same host name): the most
-- recently enrolled keeps the name (the one GetWorker by name answered),
-- every other is renamed "<name>-<last 8 characters of its id>", which keeps
-- it findable and says which record it is. Nothing else of them changes.
UPDATE workers SET name = name || '-' || substr(id, -8)
 WHERE EXISTS (
    SELECT 1 FROM workers AS newer
     WHERE newer.name = workers.name
       AND (newer.enrolled_at > workers.enrolled_at
            OR (newer.enrolled_at = workers.enrolled_at AND newer.id > workers.id)));
CREATE UNIQUE INDEX workers_name_unique ON workers (name);

-- `ready` is the agent's readiness while its stream is up: a worker
-- without a stream is not ready (as the original system cleared it).
UPDATE workers SET ready = FALSE WHERE NOT online;

-- Every write a watcher sees adds one: the hub never publishes a row older
-- than one it published already, so a late read cannot overwrite a newer
-- state (the metrics flush does not count; its figures travel apart).
ALTER TABLE workers ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- A machine that asked to enroll under this worker's name with another
-- machine id (a reinstalled machine): refused until an administrator
-- approves the takeover (the record, with its labels and history, then
-- gets the new machine at its next Enroll) or deletes this worker.
ALTER TABLE workers ADD COLUMN takeover_machine_id TEXT;
ALTER TABLE workers ADD COLUMN takeover_ip_address TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN takeover_requested_at INTEGER;
ALTER TABLE workers ADD COLUMN takeover_approved_at INTEGER;
