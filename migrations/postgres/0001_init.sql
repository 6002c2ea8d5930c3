-- Accounts, sessions, the service catalog and small settings.
-- The same tables as migrations/sqlite, in PostgreSQL's types: times are
-- Unix milliseconds (BIGINT, exact and the same on both backends), ids are
-- UUIDv7 text (one SQL text binds them on both), enumerations are checked
-- text, hashes are BYTEA.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('USER', 'ADMINISTRATOR')),
    active         BOOLEAN NOT NULL DEFAULT TRUE,
    -- Bumped when every access token of the user must stop working
    -- (password change, deactivation, role change).
    token_version  BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_login_at  BIGINT
);
CREATE INDEX users_created_at ON users (created_at);
CREATE INDEX users_role_active ON users (role, active);

-- Refresh tokens: only a SHA-256 of the secret is kept. A login starts a
-- family; each refresh spends one token and adds its successor.
CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE services (
    id                   TEXT PRIMARY KEY,
    slug                 TEXT NOT NULL UNIQUE,
    name                 TEXT NOT NULL,
    description          TEXT NOT NULL,
    category             TEXT NOT NULL,
    version              TEXT NOT NULL,
    image                TEXT NOT NULL,
    port                 INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    cpu_millicores       INTEGER NOT NULL CHECK (cpu_millicores > 0),
    memory_mb            INTEGER NOT NULL CHECK (memory_mb > 0),
    storage_gb           INTEGER NOT NULL CHECK (storage_gb > 0),
    -- JSON object of string to string.
    env_template         TEXT NOT NULL CHECK (env_template::jsonb IS NOT NULL),
    monthly_price_cents  BIGINT NOT NULL CHECK (monthly_price_cents >= 0),
    active               BOOLEAN NOT NULL,
    icon_url             TEXT NOT NULL,
    docs_url             TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX services_category ON services (category);
CREATE INDEX services_name ON services (name);

CREATE TABLE service_tags (
    service_id  TEXT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    PRIMARY KEY (service_id, tag)
);
CREATE INDEX service_tags_tag ON service_tags (tag);

-- One-time facts such as "the catalog was seeded".
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
