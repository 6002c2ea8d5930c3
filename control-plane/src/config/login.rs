//! Accounts and sign-in: the `serve` flags of [`LoginArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// The bootstrap administrator, sign-up, tokens and the login limits.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Email of the bootstrap administrator, created on first start if absent.
    /// Without it, `admin@minispod.local` is created with a generated
    /// password printed once.
    #[arg(long, env = "MINISPOD_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the bootstrap administrator (used only when it is created).
    #[arg(long, env = "MINISPOD_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<minispod_support::secret::Secret>,

    /// Refuse Register (PERMISSION_DENIED): accounts are then made by
    /// administrators only. Default: anyone may sign up.
    #[arg(long, env = "MINISPOD_CLOSE_REGISTRATION")]
    pub close_registration: bool,

    /// Lifetime of access tokens, e.g. `15m`, `900s`.
    #[arg(long, env = "MINISPOD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of refresh tokens, e.g. `30d`.
    #[arg(long, env = "MINISPOD_REFRESH_TOKEN_TTL", default_value = "30d", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,

    /// Absolute lifetime of a session: however often it is refreshed, it
    /// ends this long after its sign-in, e.g. `90d`.
    #[arg(long, env = "MINISPOD_SESSION_MAX_AGE", default_value = "90d", value_parser = parse_duration)]
    pub session_max_age: Duration,

    /// Login and Register attempts one client address may burst.
    #[arg(long, env = "MINISPOD_LOGIN_IP_BURST", default_value_t = 20)]
    pub login_ip_burst: u32,

    /// Sustained Login and Register attempts per minute from one client address.
    #[arg(long, env = "MINISPOD_LOGIN_IP_PER_MINUTE", default_value_t = 10)]
    pub login_ip_per_minute: u32,

    /// Failed logins one account may take from one client address before it
    /// is slowed down.
    #[arg(long, env = "MINISPOD_LOGIN_ACCOUNT_BURST", default_value_t = 5)]
    pub login_account_burst: u32,

    /// Failed logins per hour an account recovers, per client address; the
    /// account-wide limit is ten times this.
    #[arg(long, env = "MINISPOD_LOGIN_ACCOUNT_PER_HOUR", default_value_t = 12)]
    pub login_account_per_hour: u32,

    /// Password hashes computed at once (argon2id, 19 MiB each). Default: the
    /// number of CPUs.
    #[arg(long, env = "MINISPOD_MAX_CONCURRENT_HASHES")]
    pub max_concurrent_hashes: Option<usize>,

    /// Password checks allowed to wait for a hashing slot before new ones are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MINISPOD_MAX_QUEUED_HASHES", default_value_t = 64)]
    pub max_queued_hashes: usize,
}
