//! The agent's own Prometheus metrics (`--metrics-listen`).

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

/// Counters and gauges of one agent.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// 1 while the stream is up.
    pub stream_up: AtomicU64,
    /// Streams that came up.
    pub connects: AtomicU64,
    /// Streams lost (each followed by a reconnect attempt).
    pub reconnects: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Enrollments done.
    pub enrollments: AtomicU64,
    /// Certificate renewals done.
    pub renewals: AtomicU64,
}

impl AgentMetrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, v) in [
            (
                "minispod_agent_stream_up",
                "gauge",
                "1 while the stream to the control plane is up.",
                &self.stream_up,
            ),
            (
                "minispod_agent_stream_connects_total",
                "counter",
                "Streams that came up.",
                &self.connects,
            ),
            (
                "minispod_agent_reconnects_total",
                "counter",
                "Streams lost and retried.",
                &self.reconnects,
            ),
            (
                "minispod_agent_heartbeats_sent_total",
                "counter",
                "Heartbeats sent.",
                &self.heartbeats,
            ),
            (
                "minispod_agent_enrollments_total",
                "counter",
                "Enrollments done.",
                &self.enrollments,
            ),
            (
                "minispod_agent_certificate_renewals_total",
                "counter",
                "Certificate renewals done.",
                &self.renewals,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}
