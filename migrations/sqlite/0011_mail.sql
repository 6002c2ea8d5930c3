-- Mail and notifications (issue #15): verified addresses, single-use
-- account tokens, the outbox every mail and webhook goes through, and the
-- administrators' notification preferences.

-- When the owner proved the address (Unix ms); NULL: not verified.
-- Accounts from before mail existed count as verified: nobody could verify
-- them, and turning --require-email-verification on must not lock them out.
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
UPDATE users SET email_verified_at = created_at;
-- An address the owner asked to change to; it becomes `email` when its
-- verification link is used. '' when none.
ALTER TABLE users ADD COLUMN pending_email TEXT NOT NULL DEFAULT '';

-- Password-reset and email-verification tokens: only a SHA-256 of the
-- secret is kept. A token is spent once; a newer token of the same purpose
-- supersedes the older ones (they are marked used when it is made).
CREATE TABLE account_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL CHECK (purpose IN ('PASSWORD_RESET', 'VERIFY_EMAIL')),
    token_hash  BLOB NOT NULL UNIQUE,
    -- The address the link was mailed to (for VERIFY_EMAIL, the one it proves).
    email       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX account_tokens_user ON account_tokens (user_id, purpose);

-- Every mail and webhook, written in the transaction of the change that
-- causes it and delivered by the outbox worker. A lease makes one replica
-- at a time try a message; attempts back off until max attempts, then
-- FAILED. Bodies are cleared once sent (reset and verification links are
-- secrets).
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('MAIL', 'WEBHOOK')),
    -- Why it was sent: password_reset, verify_email, worker_offline, ...
    purpose          TEXT NOT NULL,
    -- A mail address, or a webhook URL.
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    -- MAIL: the text and HTML bodies. WEBHOOK: body_text is the JSON event.
    body_text        TEXT NOT NULL,
    body_html        TEXT NOT NULL DEFAULT '',
    -- WEBHOOK: the administrator whose secret signs it.
    signer_user_id   TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_created ON outbox (created_at);

-- What an administrator wants to hear about, and how.
CREATE TABLE notification_preferences (
    user_id         TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mail            BOOLEAN NOT NULL DEFAULT FALSE,
    webhook_url     TEXT NOT NULL DEFAULT '',
    -- The HMAC key of webhook signatures (it must be readable to sign).
    webhook_secret  TEXT NOT NULL DEFAULT '',
    -- Comma-separated NotificationEvent names without the prefix,
    -- e.g. ',WORKER_OFFLINE,WORKER_ONLINE,'.
    events          TEXT NOT NULL DEFAULT ',',
    updated_at      INTEGER NOT NULL
);
