//! Notifications: the `serve` flags of [`NotifyArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// When administrators are told about workers and blocked subscriptions,
/// and customers about their subscriptions.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// How long a worker's stream must stay down before administrators are
    /// told it is offline: shorter outages send nothing.
    #[arg(long, env = "MINISPOD_NOTIFY_OFFLINE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub notify_offline_grace: Duration,

    /// How long a worker must stay NOT_READY before administrators are told.
    #[arg(long, env = "MINISPOD_NOTIFY_NOT_READY_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub notify_not_ready_grace: Duration,

    /// A worker that went offline again within this window of its last
    /// notice is reported in one summary at the window's end ("went offline
    /// 7 times in 10 minutes"), not once per outage.
    #[arg(long, env = "MINISPOD_NOTIFY_FLAP_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub notify_flap_window: Duration,

    /// When a customer cannot subscribe because no cluster is linked or the
    /// workers have no room, administrators are told (SUBSCRIBE_BLOCKED) at
    /// most once per cause in this window, per replica.
    #[arg(long, env = "MINISPOD_NOTIFY_BLOCKED_EVERY", default_value = "15m", value_parser = parse_duration)]
    pub notify_blocked_every: Duration,

    /// Administrators who want VERSIONS_BEHIND get a digest of the
    /// subscriptions more than this many versions behind their catalog
    /// entry's newest (newer versions that are not withdrawn are counted);
    /// 0 turns the digest off.
    #[arg(long, env = "MINISPOD_VERSIONS_BEHIND_DIGEST", default_value_t = 0)]
    pub versions_behind_digest: u32,

    /// At most one versions-behind digest in this period (the time it was
    /// last sent is stored: a restart does not send it again). Also how
    /// often, up to once a minute, the subscriptions are looked at.
    #[arg(long, env = "MINISPOD_VERSIONS_BEHIND_DIGEST_EVERY", default_value = "24h", value_parser = parse_duration)]
    pub versions_behind_digest_every: Duration,

    /// How long a subscription must stay DEGRADED or FAILED before its
    /// owner is told: shorter spells (a rollout, a worker reconnecting)
    /// send nothing. Outages that begin within `--notify-flap-window` of a
    /// told one are summarised at the window's end.
    #[arg(long, env = "MINISPOD_NOTIFY_SUBSCRIPTION_GRACE", default_value = "2m", value_parser = parse_duration)]
    pub notify_subscription_grace: Duration,

    /// A subscription whose containers restarted this many times within
    /// `--notify-crash-window` is crash-looping: its owner is told once per
    /// spell (a spell ends after a window without a restart).
    #[arg(long, env = "MINISPOD_NOTIFY_CRASH_RESTARTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub notify_crash_restarts: u32,

    /// See `--notify-crash-restarts`.
    #[arg(long, env = "MINISPOD_NOTIFY_CRASH_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub notify_crash_window: Duration,
}
