//! Workers and enrollment: the `serve` flags of [`FleetArgs`].

use std::{path::PathBuf, time::Duration};

use clap::Args;
use minispod_support::parse_duration;

/// Agents' streams, heartbeats, enrollment and the per-worker limits.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// How often agents send heartbeats.
    #[arg(long, env = "MINISPOD_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A stream silent for this many heartbeat intervals is closed and its
    /// worker marked INACTIVE.
    #[arg(long, env = "MINISPOD_MISSED_HEARTBEATS", default_value_t = 3)]
    pub missed_heartbeats: u32,

    /// How often heartbeat metrics are written to the store, in one
    /// transaction for the whole fleet.
    #[arg(long, env = "MINISPOD_METRICS_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub metrics_flush_interval: Duration,

    /// Lifetime of worker client certificates; agents renew at two thirds.
    #[arg(long, env = "MINISPOD_WORKER_CERT_TTL", default_value = "7d", value_parser = parse_duration)]
    pub worker_cert_ttl: Duration,

    /// File holding a static enrollment token (opt-in, for unattended
    /// installs). Imported into the token table on the first start that
    /// sees it, with `--enrollment-token-ttl` and
    /// `--enrollment-token-max-uses`; then listed, used up, expired and
    /// revoked like tokens made with CreateEnrollmentToken.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_FILE")]
    pub enrollment_token_file: Option<PathBuf>,

    /// Lifetime of the static token, from its first import.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub enrollment_token_ttl: Duration,

    /// Enrollments the static token admits; 0 for unlimited.
    #[arg(long, env = "MINISPOD_ENROLLMENT_TOKEN_MAX_USES", default_value_t = 1)]
    pub enrollment_token_max_uses: u32,

    /// Connect calls one worker may burst (each marks it online: a write).
    #[arg(long, env = "MINISPOD_WORKER_CONNECT_BURST", default_value_t = 10)]
    pub worker_connect_burst: u32,

    /// Sustained spacing of one worker's Connect calls after the burst.
    #[arg(long, env = "MINISPOD_WORKER_CONNECT_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub worker_connect_every: Duration,

    /// RenewCertificate calls one worker may burst.
    #[arg(long, env = "MINISPOD_WORKER_RENEW_BURST", default_value_t = 5)]
    pub worker_renew_burst: u32,

    /// Sustained spacing of one worker's RenewCertificate calls.
    #[arg(long, env = "MINISPOD_WORKER_RENEW_EVERY", default_value = "10m", value_parser = parse_duration)]
    pub worker_renew_every: Duration,

    /// Readiness changes of one worker written at once; more wait for a
    /// later heartbeat.
    #[arg(long, env = "MINISPOD_WORKER_READY_CHANGE_BURST", default_value_t = 10)]
    pub worker_ready_change_burst: u32,

    /// Sustained spacing of one worker's readiness writes.
    #[arg(long, env = "MINISPOD_WORKER_READY_CHANGE_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub worker_ready_change_every: Duration,

    /// K3s server URL handed to enrolled agents for their join hook.
    #[arg(long, env = "MINISPOD_K3S_SERVER_URL", default_value = "")]
    pub k3s_server_url: String,

    /// File holding the K3s join token handed to enrolled agents. With a
    /// linked cluster each enrollment gets a bootstrap token of its own
    /// instead, and this one is the fallback when the cluster cannot make one.
    #[arg(long, env = "MINISPOD_K3S_TOKEN_FILE")]
    pub k3s_token_file: Option<PathBuf>,

    /// How long the per-enrollment K3s bootstrap tokens of a linked cluster
    /// stay valid (the agent joins K3s right after enrolling).
    #[arg(long, env = "MINISPOD_K3S_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub k3s_token_ttl: Duration,

    /// Enroll calls one client address may burst.
    #[arg(long, env = "MINISPOD_ENROLL_BURST", default_value_t = 100)]
    pub enroll_burst: u32,

    /// Sustained Enroll calls per second from one client address.
    #[arg(long, env = "MINISPOD_ENROLL_PER_SECOND", default_value_t = 50)]
    pub enroll_per_second: u32,
}
