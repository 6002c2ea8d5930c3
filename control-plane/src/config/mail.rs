//! Mail and webhooks: the `serve` flags of [`MailArgs`].

use std::{path::PathBuf, time::Duration};

use clap::Args;
use minispod_support::parse_duration;

/// Mail (SMTP), its links, the outbox's retries and where webhooks may go.
#[derive(Debug, Clone, Args)]
pub struct MailArgs {
    /// SMTP server for mail: `smtp://[user:password@]host[:port]` (STARTTLS
    /// required, port 587), `smtps://...` (TLS, port 465), or
    /// `smtp://host?tls=none` for a relay on this machine. Without it, no
    /// mail is sent and the features that need mail say so.
    #[arg(long, env = "MINISPOD_SMTP_URL")]
    pub smtp_url: Option<minispod_support::secret::Secret>,

    /// CA certificate (PEM) trusted for the SMTP server besides the
    /// system's roots.
    #[arg(long, env = "MINISPOD_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// Sender of mail, e.g. `MiniSpod <minispod@example.org>`.
    #[arg(long, env = "MINISPOD_MAIL_FROM", default_value = "")]
    pub mail_from: String,

    /// Where users open the console, for links in mail (e.g.
    /// `https://minispod.example.org`); default: this server's address.
    #[arg(long, env = "MINISPOD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Refuse sign-in until the account's email address is verified
    /// (needs --smtp-url). Accounts from before mail count as verified.
    #[arg(long, env = "MINISPOD_REQUIRE_EMAIL_VERIFICATION")]
    pub require_email_verification: bool,

    /// Lifetime of a password-reset link.
    #[arg(long, env = "MINISPOD_PASSWORD_RESET_TTL", default_value = "30m", value_parser = parse_duration)]
    pub password_reset_ttl: Duration,

    /// Lifetime of an email-verification link.
    #[arg(long, env = "MINISPOD_EMAIL_VERIFICATION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub email_verification_ttl: Duration,

    /// CA certificate (PEM) trusted for webhook receivers besides the
    /// system's roots.
    #[arg(long, env = "MINISPOD_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Delay before a failed mail or webhook is tried again; doubled after
    /// each failure up to --outbox-retry-max.
    #[arg(long, env = "MINISPOD_OUTBOX_RETRY_INITIAL", default_value = "5s", value_parser = parse_duration)]
    pub outbox_retry_initial: Duration,

    /// Longest delay between two tries of a message.
    #[arg(long, env = "MINISPOD_OUTBOX_RETRY_MAX", default_value = "30m", value_parser = parse_duration)]
    pub outbox_retry_max: Duration,

    /// Tries before a message is given up (FAILED, listed for
    /// administrators, who can retry it).
    #[arg(long, env = "MINISPOD_OUTBOX_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub outbox_max_attempts: i32,

    /// Address ranges webhooks may reach although they are internal
    /// (loopback, private, link-local...), plain http:// included; e.g.
    /// `127.0.0.0/8` for a receiver on this machine. Repeat or separate by
    /// commas. None by default: webhooks go to the public internet over
    /// https:// only.
    #[arg(
        long = "webhook-allow-range",
        env = "MINISPOD_WEBHOOK_ALLOW_RANGES",
        value_delimiter = ','
    )]
    pub webhook_allow_ranges: Vec<crate::rate_limit::Cidr>,

    /// Address ranges webhooks never reach besides the built-in internal
    /// ones and the cluster's ranges (`--cluster-pod-cidrs`,
    /// `--cluster-service-cidrs`, `--cluster-node-cidrs`, always refused).
    /// None by default.
    #[arg(
        long = "webhook-deny-range",
        env = "MINISPOD_WEBHOOK_DENY_RANGES",
        value_delimiter = ','
    )]
    pub webhook_deny_ranges: Vec<crate::rate_limit::Cidr>,
}
