//! Prometheus metrics of the control plane, rendered in the text format on
//! `--metrics-listen`.
//!
//! Counters and histograms live here; fleet gauges (workers by status,
//! online, streams open) are read at scrape time from the store and the hub,
//! so they can never drift from the truth.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Every method path this server answers (`/package.Service/Method`), from
/// the descriptor sets it serves by reflection, plus reflection's own.
static KNOWN_METHODS: std::sync::LazyLock<std::collections::HashSet<String>> =
    std::sync::LazyLock::new(|| {
        let mut known = std::collections::HashSet::new();
        for encoded in [
            minispod_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(encoded)
            else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            known.insert(format!(
                "/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"
            ));
        }
        known
    });

/// Latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Batch-size buckets, workers per flush.
const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 50000.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The control plane's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    rpc_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    rpc_latency: Mutex<BTreeMap<String, Histogram>>,
    /// Heartbeats received on all streams.
    pub heartbeats: AtomicU64,
    /// Successful enrollments.
    pub enrollments: AtomicU64,
    /// Refused enrollments.
    pub enrollment_failures: AtomicU64,
    /// Streams opened (hello accepted).
    pub streams_opened: AtomicU64,
    /// Streams closed.
    pub streams_closed: AtomicU64,
    flush_latency: Mutex<Histogram>,
    flush_batch: Mutex<Histogram>,
    /// History rows written (worker, fleet and subscription points).
    pub history_rows: AtomicU64,
    /// Store transactions of the history recorder.
    pub history_transactions: AtomicU64,
    /// Time the history recorder spent writing, in microseconds.
    pub history_write_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            rpc_calls: Mutex::default(),
            rpc_latency: Mutex::default(),
            heartbeats: AtomicU64::new(0),
            enrollments: AtomicU64::new(0),
            enrollment_failures: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            streams_closed: AtomicU64::new(0),
            flush_latency: Mutex::new(Histogram::new(LATENCY_BUCKETS)),
            flush_batch: Mutex::new(Histogram::new(BATCH_BUCKETS)),
            history_rows: AtomicU64::new(0),
            history_transactions: AtomicU64::new(0),
            history_write_micros: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fleet gauges read at scrape time.
#[derive(Debug, Default)]
pub struct FleetGauges {
    /// (status, online, count) from the store.
    pub workers: Vec<(String, bool, i64)>,
    /// Streams held by this process.
    pub streams_open: usize,
    /// The cluster link's state name (e.g. "CONNECTED") and its (nodes,
    /// nodes that belong to a worker); None when no cluster is linked.
    pub cluster: Option<(&'static str, i64, i64)>,
    /// Outbox messages waiting and given up, from the store.
    pub outbox: (i64, i64),
    /// This process's deliveries: sent, failed attempts, given up.
    pub deliveries: (u64, u64, u64),
    /// The Kubernetes API's answers to this process; None when unlinked.
    pub kube_api: Option<ApiSnapshot>,
}

/// The last error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// Resource kind (plural, as in the URL: "deployments", "pods/eviction").
    pub kind: String,
    /// HTTP status code; 0 when no answer came (unreachable, timeout).
    pub code: u16,
    /// The API's message (a Status's `message`), or the transport error.
    pub message: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// A copy of the Kubernetes API's answer counts (`cluster::api_stats`
/// keeps them).
#[derive(Debug, Clone, Default)]
pub struct ApiSnapshot {
    /// (kind, verb) → requests.
    pub requests: BTreeMap<(String, &'static str), u64>,
    /// (kind, code) → error answers (code 0: no answer).
    pub errors: BTreeMap<(String, u16), u64>,
    /// The last error.
    pub last: Option<LastError>,
}

impl Metrics {
    /// Counts one finished RPC.
    pub fn observe_rpc(&self, method: &str, code: &'static str, elapsed: Duration) {
        // Paths come from clients: only methods this server has get their
        // own series, so a made-up path can neither grow memory nor put
        // characters into the exposition that break the whole scrape.
        let method = if KNOWN_METHODS.contains(method) {
            method
        } else {
            "other"
        };
        let mut calls = lock(&self.rpc_calls);
        *calls.entry((method.to_owned(), code)).or_default() += 1;
        drop(calls);
        lock(&self.rpc_latency)
            .entry(method.to_owned())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    /// Records one metrics flush: how many workers, how long.
    pub fn observe_flush(&self, workers: usize, elapsed: Duration) {
        lock(&self.flush_batch).observe(workers as f64);
        lock(&self.flush_latency).observe(elapsed.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self, fleet: &FleetGauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP minispod_workers Workers by status and stream state.\n# TYPE minispod_workers gauge"
        );
        for (status, online, n) in &fleet.workers {
            let _ = writeln!(
                out,
                "minispod_workers{{status=\"{status}\",online=\"{online}\"}} {n}"
            );
        }
        let online: i64 = fleet.workers.iter().filter(|w| w.1).map(|w| w.2).sum();
        let _ = writeln!(
            out,
            "# HELP minispod_workers_online Workers with an open stream.\n# TYPE minispod_workers_online gauge\nminispod_workers_online {online}"
        );
        let _ = writeln!(
            out,
            "# HELP minispod_streams_open Agent streams held by this process.\n# TYPE minispod_streams_open gauge\nminispod_streams_open {}",
            fleet.streams_open
        );
        if let Some((state, nodes, linked)) = fleet.cluster {
            let _ = writeln!(
                out,
                "# HELP minispod_cluster_link_up 1 while the Kubernetes API server is reachable and the node and pod watches are synced.\n# TYPE minispod_cluster_link_up gauge\nminispod_cluster_link_up{{state=\"{state}\"}} {}",
                u8::from(state == "CONNECTED")
            );
            let _ = writeln!(
                out,
                "# HELP minispod_cluster_nodes Kubernetes nodes the link sees, and how many belong to a worker.\n# TYPE minispod_cluster_nodes gauge\nminispod_cluster_nodes {nodes}\nminispod_cluster_nodes_linked {linked}"
            );
        }
        if let Some(api) = &fleet.kube_api {
            let _ = writeln!(
                out,
                "# HELP minispod_kube_api_requests_total Requests to the Kubernetes API server by resource kind and verb.\n# TYPE minispod_kube_api_requests_total counter"
            );
            for ((kind, verb), n) in &api.requests {
                let _ = writeln!(
                    out,
                    "minispod_kube_api_requests_total{{kind=\"{kind}\",verb=\"{verb}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP minispod_kube_api_errors_total Error answers of the Kubernetes API server by resource kind and HTTP code (0: no answer).\n# TYPE minispod_kube_api_errors_total counter"
            );
            for ((kind, code), n) in &api.errors {
                let _ = writeln!(
                    out,
                    "minispod_kube_api_errors_total{{kind=\"{kind}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP minispod_outbox_messages Mails and webhooks in the outbox that wait to be sent, and that were given up.\n# TYPE minispod_outbox_messages gauge\nminispod_outbox_messages{{status=\"pending\"}} {}\nminispod_outbox_messages{{status=\"failed\"}} {}",
            fleet.outbox.0, fleet.outbox.1
        );
        counter(
            &mut out,
            "minispod_outbox_delivered_total",
            "Mails and webhooks this process delivered.",
            fleet.deliveries.0,
        );
        counter(
            &mut out,
            "minispod_outbox_attempt_failures_total",
            "Delivery attempts of this process that failed (retried or given up).",
            fleet.deliveries.1,
        );
        counter(
            &mut out,
            "minispod_outbox_given_up_total",
            "Messages this process gave up on (FAILED).",
            fleet.deliveries.2,
        );
        counter(
            &mut out,
            "minispod_heartbeats_received_total",
            "Heartbeats received.",
            self.heartbeats.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_history_rows_written_total",
            "History rows written (worker, fleet and subscription points).",
            self.history_rows.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_history_transactions_total",
            "Store transactions of the history recorder.",
            self.history_transactions.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_history_write_microseconds_total",
            "Time the history recorder spent writing, in microseconds.",
            self.history_write_micros.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_enrollments_total",
            "Successful enrollments.",
            self.enrollments.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_enrollment_failures_total",
            "Refused enrollments.",
            self.enrollment_failures.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_streams_opened_total",
            "Agent streams opened.",
            self.streams_opened.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "minispod_streams_closed_total",
            "Agent streams closed.",
            self.streams_closed.load(Ordering::Relaxed),
        );

        let _ = writeln!(
            out,
            "# HELP minispod_rpc_requests_total RPCs by method and status code.\n# TYPE minispod_rpc_requests_total counter"
        );
        for ((method, code), n) in lock(&self.rpc_calls).iter() {
            let _ = writeln!(
                out,
                "minispod_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP minispod_rpc_duration_seconds Time to the response headers, by method.\n# TYPE minispod_rpc_duration_seconds histogram"
        );
        for (method, h) in lock(&self.rpc_latency).iter() {
            h.render(
                &mut out,
                "minispod_rpc_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
        let _ = writeln!(
            out,
            "# HELP minispod_store_flush_batch_workers Workers written per heartbeat-metrics flush.\n# TYPE minispod_store_flush_batch_workers histogram"
        );
        lock(&self.flush_batch).render(&mut out, "minispod_store_flush_batch_workers", "");
        let _ = writeln!(
            out,
            "# HELP minispod_store_flush_duration_seconds Duration of heartbeat-metrics flushes.\n# TYPE minispod_store_flush_duration_seconds histogram"
        );
        lock(&self.flush_latency).render(&mut out, "minispod_store_flush_duration_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_paths_share_one_series_and_cannot_break_the_scrape() {
        let m = Metrics::default();
        let crafted = "/x\"} 1\nminispod_fake 99\n{";
        m.observe_rpc(crafted, "UNIMPLEMENTED", Duration::from_millis(1));
        m.observe_rpc(
            "/nope.Service/Call",
            "UNIMPLEMENTED",
            Duration::from_millis(1),
        );
        m.observe_rpc(
            "/minispod.v1.WorkerService/WatchWorkers",
            "OK",
            Duration::from_millis(1),
        );
        let text = m.render(&FleetGauges {
            workers: vec![],
            streams_open: 0,
            cluster: None,
            kube_api: Some(ApiSnapshot {
                errors: [(("deployments".to_owned(), 403), 3)].into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(!text.contains("minispod_fake"), "{text}");
        assert!(
            text.contains("minispod_kube_api_errors_total{kind=\"deployments\",code=\"403\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("minispod_rpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 2")
        );
        assert!(text.contains("method=\"/minispod.v1.WorkerService/WatchWorkers\""));
    }

    #[test]
    fn the_exposition_has_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe_rpc(
            "/minispod.v1.AuthService/Login",
            "OK",
            Duration::from_millis(3),
        );
        m.observe_rpc(
            "/minispod.v1.AuthService/Login",
            "UNAUTHENTICATED",
            Duration::from_millis(30),
        );
        m.observe_flush(42, Duration::from_millis(2));
        let text = m.render(&FleetGauges {
            workers: vec![("ACTIVE".into(), true, 3)],
            streams_open: 3,
            cluster: None,
            outbox: (4, 1),
            deliveries: (7, 2, 1),
            kube_api: None,
        });
        assert!(text.contains("minispod_outbox_messages{status=\"pending\"} 4"));
        assert!(text.contains("minispod_outbox_messages{status=\"failed\"} 1"));
        assert!(text.contains("minispod_outbox_delivered_total 7"));
        assert!(text.contains(
            "minispod_rpc_requests_total{method=\"/minispod.v1.AuthService/Login\",code=\"OK\"} 1"
        ));
        assert!(text.contains("minispod_rpc_duration_seconds_bucket{method=\"/minispod.v1.AuthService/Login\",le=\"0.005\"} 1"));
        assert!(text.contains(
            "minispod_rpc_duration_seconds_count{method=\"/minispod.v1.AuthService/Login\"} 2"
        ));
        assert!(text.contains("minispod_store_flush_batch_workers_bucket{le=\"100\"} 1"));
        assert!(text.contains("minispod_workers{status=\"ACTIVE\",online=\"true\"} 3"));
        assert!(text.contains("minispod_workers_online 3"));
    }
}
