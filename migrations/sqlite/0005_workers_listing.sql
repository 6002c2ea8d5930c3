-- ListWorkers filters on status, online, ready and cordoned, searches name,
-- IP and machine id, and pages in (name, id) order. This index holds all of
-- them: a listing by status seeks it, walks it already in page order and
-- checks the other filters without reading the wide rows (which the
-- heartbeat flush rewrites every few seconds); counting the matches reads
-- only the index. It starts with status, so it replaces the index on status
-- alone; the index on name gains id so that listings without a status filter
-- need no sort either.
DROP INDEX workers_status;
DROP INDEX workers_name;
CREATE INDEX workers_name ON workers (name, id);
CREATE INDEX workers_listing
    ON workers (status, name, id, online, ready, cordoned, ip_address, machine_id);
