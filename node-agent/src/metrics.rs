//! The agent's own Prometheus metrics (`--metrics-listen`).

use std::{
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
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
    /// 1 while the certificate has expired (the agent cannot connect
    /// until it enrolls again with a token bound to this machine).
    pub certificate_expired: AtomicU64,
    /// When the current certificate expires, Unix seconds; 0 before
    /// enrollment.
    pub certificate_expires_at: AtomicU64,
    /// 1 once the K3s join hook has succeeded.
    pub k3s_joined: AtomicU64,
    /// The reason of the refusal that keeps the agent out, if one does
    /// (`WORKER_REMOVED`, `CERTIFICATE_EXPIRED`, ...).
    pub refused: Mutex<Option<&'static str>>,
}

impl AgentMetrics {
    /// Sets (or, with None, clears) the refusal that keeps the agent out.
    pub fn set_refused(&self, reason: Option<&'static str>) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The refusal that keeps the agent out, if one does.
    pub fn refused(&self) -> Option<&'static str> {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

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
            (
                "minispod_agent_certificate_expired",
                "gauge",
                "1 while the certificate has expired and the agent needs a token bound to this machine to enroll again.",
                &self.certificate_expired,
            ),
            (
                "minispod_agent_certificate_expires_at_seconds",
                "gauge",
                "When the certificate expires, Unix seconds.",
                &self.certificate_expires_at,
            ),
            (
                "minispod_agent_k3s_joined",
                "gauge",
                "1 once the K3s join hook has succeeded; the worker reports ready only then.",
                &self.k3s_joined,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP minispod_agent_refused 1 for the reason the control plane (or an expired certificate) keeps this agent out; no sample while nothing does.\n# TYPE minispod_agent_refused gauge"
        );
        if let Some(reason) = self.refused() {
            let _ = writeln!(out, "minispod_agent_refused{{reason=\"{reason}\"}} 1");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_shows_with_its_reason_and_clears() {
        let m = AgentMetrics::default();
        assert!(!m.render().contains("minispod_agent_refused{"));
        m.set_refused(Some("CERTIFICATE_EXPIRED"));
        let text = m.render();
        assert!(
            text.contains("minispod_agent_refused{reason=\"CERTIFICATE_EXPIRED\"} 1"),
            "{text}"
        );
        m.set_refused(Some("WORKER_REMOVED"));
        let text = m.render();
        assert!(
            text.contains("minispod_agent_refused{reason=\"WORKER_REMOVED\"} 1"),
            "{text}"
        );
        assert!(!text.contains("CERTIFICATE_EXPIRED"), "{text}");
        m.set_refused(None);
        assert!(!m.render().contains("minispod_agent_refused{"));
    }
}
