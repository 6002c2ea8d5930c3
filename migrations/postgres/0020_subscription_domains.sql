-- Customers' own domains (issue #25). One row per host attached to a
-- subscription. `state` is PENDING until the host answers the ownership
-- check (the token `token` served at /.well-known/minispod/<token> through
-- the cluster's ingress), then VERIFIED, CERTIFICATE_ISSUED or
-- CERTIFICATE_FAILING (cert-manager's Certificate), or FAILED when it was
-- not verified in time. `removed_at` (unix ms, 0 while attached) marks a
-- row whose cluster objects are being deleted; the row goes with them.
-- No foreign key to subscriptions: a deleted subscription's rows stay
-- until the domain loop has deleted their objects from the cluster.
CREATE TABLE subscription_domains (
    id               TEXT PRIMARY KEY NOT NULL,
    subscription_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    host             TEXT NOT NULL,
    token            TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('PENDING', 'VERIFIED', 'CERTIFICATE_ISSUED', 'CERTIFICATE_FAILING', 'FAILED')),
    reason           TEXT NOT NULL DEFAULT '',
    checks           BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    checked_at       BIGINT NOT NULL DEFAULT 0,
    next_check_at    BIGINT NOT NULL DEFAULT 0,
    verified_at      BIGINT NOT NULL DEFAULT 0,
    removed_at       BIGINT NOT NULL DEFAULT 0
);
-- Two customers can never claim one host: one live claim per host (a
-- FAILED or removed row no longer holds it).
CREATE UNIQUE INDEX subscription_domains_host ON subscription_domains (host)
    WHERE removed_at = 0 AND state <> 'FAILED';
CREATE INDEX subscription_domains_subscription ON subscription_domains (subscription_id);
CREATE INDEX subscription_domains_user ON subscription_domains (user_id);
