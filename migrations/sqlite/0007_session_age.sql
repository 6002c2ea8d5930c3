-- A session (a refresh-token family) ends at an absolute age whatever its
-- refreshes: every token of the family carries when the session began.
ALTER TABLE refresh_tokens ADD COLUMN session_started_at INTEGER;
UPDATE refresh_tokens SET session_started_at = created_at;
