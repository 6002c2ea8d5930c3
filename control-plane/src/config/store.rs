//! Database: the `serve` flags of [`StoreArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// The database and, on PostgreSQL, the replicas sharing it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Database URL: `sqlite:PATH` or `postgres://user:pass@host/db`.
    /// Default: SQLite at `<data-dir>/minispod.db`. On PostgreSQL several
    /// replicas may share one database (and one CA and JWT key: give each
    /// replica the same `pki/` and `jwt.key`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Most database connections this process opens (SQLite: readers).
    #[arg(long, env = "MINISPOD_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// How long a query waits for a free database connection.
    #[arg(long, env = "MINISPOD_DATABASE_ACQUIRE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_acquire_timeout: Duration,

    /// How long start-up keeps retrying a PostgreSQL server that is not up yet.
    #[arg(long, env = "MINISPOD_DATABASE_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub database_connect_timeout: Duration,

    /// PostgreSQL only: the lease under which a replica holds its agents'
    /// streams, renewed every third of it. When a replica dies, its workers
    /// go INACTIVE once its lease lapses.
    #[arg(long, env = "MINISPOD_REPLICA_LEASE", default_value = "10s", value_parser = parse_duration)]
    pub replica_lease: Duration,
}
