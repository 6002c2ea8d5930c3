//! History: the `serve` flags of [`HistoryArgs`].

use std::time::Duration;

use clap::Args;
use minispod_support::parse_duration;

/// How the workers' and subscriptions' history is kept.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Width of the history's fine points (charts of up to a day): one
    /// row per worker per step, written in batches.
    #[arg(long, env = "MINISPOD_HISTORY_FINE_STEP", default_value = "1m", value_parser = parse_duration)]
    pub history_fine_step: Duration,

    /// How long fine history points are kept.
    #[arg(long, env = "MINISPOD_HISTORY_FINE_RETENTION", default_value = "25h", value_parser = parse_duration)]
    pub history_fine_retention: Duration,

    /// Width of the history's coarse points (charts of up to a month); a
    /// multiple of --history-fine-step.
    #[arg(long, env = "MINISPOD_HISTORY_COARSE_STEP", default_value = "1h", value_parser = parse_duration)]
    pub history_coarse_step: Duration,

    /// How long coarse history points and subscriptions' status and
    /// restart history are kept; the longest range a chart may ask for.
    #[arg(long, env = "MINISPOD_HISTORY_COARSE_RETENTION", default_value = "31d", value_parser = parse_duration)]
    pub history_coarse_retention: Duration,
}
