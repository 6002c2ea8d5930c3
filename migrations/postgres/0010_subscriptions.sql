-- Subscriptions (issue #14): a customer's instance of a catalog service,
-- deployed as Kubernetes objects in the customer's namespace and kept equal
-- to this row by the reconciler.
--
-- desired is what the owner and administrators asked for (RUNNING,
-- SUSPENDED, DELETED); status is what the reconciler last saw. generation
-- goes up on every change of what is deployed (variables, restart, suspend,
-- resume); applied_generation is the one last applied. The lease makes one
-- replica at a time act on a subscription.
--
-- No foreign key to users: deleting a user suspends their subscriptions,
-- which keep the owner's id and address until an administrator deletes them.
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY NOT NULL,
    name                 TEXT NOT NULL UNIQUE,
    user_id              TEXT NOT NULL,
    user_email           TEXT NOT NULL,
    service_id           TEXT NOT NULL REFERENCES services (id),
    service_slug         TEXT NOT NULL,
    service_name         TEXT NOT NULL,
    namespace            TEXT NOT NULL,
    -- The catalog template when the subscription was created (protobuf).
    template             BYTEA NOT NULL,
    -- JSON objects of name to value: the variables (SECRET ones included)
    -- and the generated values, made once.
    variables            TEXT NOT NULL,
    generated            TEXT NOT NULL,
    monthly_price_cents  BIGINT NOT NULL,
    desired              TEXT NOT NULL CHECK (desired IN ('RUNNING', 'SUSPENDED', 'DELETED')),
    -- Who suspended it: ADMIN, or OWNER (deactivated or deleted); '' when not.
    suspended_by         TEXT NOT NULL DEFAULT '',
    status               TEXT NOT NULL CHECK (status IN ('PENDING', 'PROVISIONING', 'RUNNING', 'DEGRADED', 'SUSPENDED', 'DELETING', 'FAILED')),
    status_reason        TEXT NOT NULL DEFAULT '',
    status_changed_at    BIGINT NOT NULL,
    -- Whether it has been RUNNING at least once (not ready afterwards is
    -- DEGRADED, before it is PROVISIONING).
    ever_ran             BOOLEAN NOT NULL DEFAULT FALSE,
    generation           BIGINT NOT NULL DEFAULT 1,
    applied_generation   BIGINT NOT NULL DEFAULT 0,
    -- Unix ms of the last restart asked for (0: never); a pod annotation.
    restarted_at         BIGINT NOT NULL DEFAULT 0,
    -- The workers its pods run on, as ",id,id," for filtering.
    workers              TEXT NOT NULL DEFAULT ',',
    lease_owner          TEXT NOT NULL DEFAULT '',
    lease_until          BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX subscriptions_user ON subscriptions (user_id, created_at);
CREATE INDEX subscriptions_service ON subscriptions (service_id);
CREATE INDEX subscriptions_status ON subscriptions (status);
CREATE INDEX subscriptions_created ON subscriptions (created_at);

-- Every status change, newest kept (the reconciler trims to 200 per
-- subscription).
CREATE TABLE subscription_events (
    id               BIGSERIAL PRIMARY KEY,
    subscription_id  TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    at               BIGINT NOT NULL
);
CREATE INDEX subscription_events_by_subscription ON subscription_events (subscription_id, id);

-- Volumes of deleted subscriptions, removed from the cluster once
-- delete_after has passed (--volume-retention).
CREATE TABLE retained_volumes (
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    delete_after  BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);
