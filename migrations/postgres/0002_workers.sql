-- The worker fleet and the tokens that admit machines into it.

CREATE TABLE workers (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    -- One record per machine: re-enrolling the same machine reuses it.
    machine_id                TEXT NOT NULL UNIQUE,
    -- Derived from maintenance, online and ready on every change, and
    -- stored so listings can filter on it.
    status                    TEXT NOT NULL CHECK (status IN ('PENDING', 'ACTIVE', 'INACTIVE', 'MAINTENANCE', 'NOT_READY')),
    maintenance               BOOLEAN NOT NULL DEFAULT FALSE,
    online                    BOOLEAN NOT NULL DEFAULT FALSE,
    ready                     BOOLEAN NOT NULL DEFAULT FALSE,
    cordoned                  BOOLEAN NOT NULL DEFAULT FALSE,
    ever_connected            BOOLEAN NOT NULL DEFAULT FALSE,
    ip_address                TEXT NOT NULL DEFAULT '',
    cpu_model                 TEXT NOT NULL DEFAULT '',
    cpu_cores                 BIGINT NOT NULL DEFAULT 0,
    architecture              TEXT NOT NULL DEFAULT '',
    memory_bytes              BIGINT NOT NULL DEFAULT 0,
    storage_bytes             BIGINT NOT NULL DEFAULT 0,
    os                        TEXT NOT NULL DEFAULT '',
    kernel_version            TEXT NOT NULL DEFAULT '',
    kubelet_version           TEXT NOT NULL DEFAULT '',
    container_runtime         TEXT NOT NULL DEFAULT '',
    agent_version             TEXT NOT NULL DEFAULT '',
    -- JSON object and JSON array of {key, value, effect}.
    labels                    TEXT NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels::jsonb) = 'object'),
    taints                    TEXT NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(taints::jsonb) = 'array'),
    notes                     TEXT NOT NULL DEFAULT '',
    allocatable_cpu_millicores BIGINT NOT NULL DEFAULT 0,
    allocatable_memory_bytes  BIGINT NOT NULL DEFAULT 0,
    allocatable_storage_bytes BIGINT NOT NULL DEFAULT 0,
    allocatable_pods          BIGINT NOT NULL DEFAULT 0,
    allocated_cpu_millicores  BIGINT NOT NULL DEFAULT 0,
    allocated_memory_bytes    BIGINT NOT NULL DEFAULT 0,
    allocated_storage_bytes   BIGINT NOT NULL DEFAULT 0,
    allocated_pods            BIGINT NOT NULL DEFAULT 0,
    cpu_used_percent          DOUBLE PRECISION NOT NULL DEFAULT 0,
    memory_used_bytes         BIGINT NOT NULL DEFAULT 0,
    storage_used_bytes        BIGINT NOT NULL DEFAULT 0,
    pod_count                 BIGINT NOT NULL DEFAULT 0,
    max_pods                  BIGINT NOT NULL DEFAULT 110,
    last_heartbeat_at         BIGINT,
    last_health_check_at      BIGINT,
    -- Only the certificate with this serial is accepted; renewal,
    -- re-enrollment and deletion replace or drop it.
    cert_serial               TEXT NOT NULL,
    cert_expires_at           BIGINT NOT NULL,
    k3s_join_error            TEXT NOT NULL DEFAULT '',
    enrolled_at               BIGINT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
CREATE INDEX workers_name ON workers (name);
CREATE INDEX workers_status ON workers (status);

CREATE TABLE enrollment_tokens (
    id           TEXT PRIMARY KEY,
    -- SHA-256 of the secret part.
    secret_hash  BYTEA NOT NULL,
    description  TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    max_uses     BIGINT NOT NULL,
    uses         BIGINT NOT NULL DEFAULT 0,
    revoked_at   BIGINT,
    created_by   TEXT,
    created_at   BIGINT NOT NULL
);
