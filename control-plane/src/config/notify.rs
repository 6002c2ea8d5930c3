//! Notifications: the `serve` flags of [`NotifyArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// When administrators are told about workers and blocked subscriptions.
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
}
