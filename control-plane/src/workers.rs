//! The worker fleet: enrollment, the agents' streams, and administration.
//!
//! - `enrollment`: tokens, Enroll (who may take over a machine id, removed
//!   machines) and RenewCertificate (certificates from the CA in `pki`).
//! - `hub`: the live streams (one per worker), watchers, and the batched
//!   heartbeat metrics.
//! - `limits`: per-worker limits on connects, renewals and readiness
//!   changes (each a write).
//! - `session`: one agent stream from hello to goodbye; where a worker goes
//!   offline.
//! - `replicas`: the lease under which this process holds streams, reaping
//!   the workers of dead replicas, and relaying fleet changes between
//!   replicas.
//! - the gRPC WorkerService and AgentService are in `crate::api`.
//! - `queries`: the SQL.
//!
//! # A worker going offline: who reacts
//!
//! `session` (the stream ended, or fell silent past the heartbeat
//! deadline) and `replicas` (a dead replica's workers) write the worker
//! offline and publish it on the hub ([`hub::WorkerEvent::Upserted`], with
//! `online: false`; PostgreSQL relays it to every replica). This floor
//! knows nothing of who listens; the listeners, all above it, are:
//!
//! - `crate::nodes::reconcile` (the node reconciler): after
//!   `--offline-taint-grace` (5 s; none within `--offline-taint-after-start`
//!   of a start, none while most workers are offline) the node gets
//!   `minispod.dev/offline:NoExecute`, so Kubernetes moves its pods; the
//!   stream's return removes it.
//! - `crate::subscriptions::reconcile` (`follow_workers`): the
//!   subscriptions with pods on the worker's node are queued at once, and
//!   their status shows the worker down.
//! - `crate::notifications::fleet` (the incident engine): after
//!   `--notify-offline-grace` (60 s) administrators are told (a mail, a
//!   webhook); flapping is summed up.
//! - the WorkerService's `WatchWorkers` streams (the console).
//!
//! Two grace clocks on purpose, with two flags: the taint's moves pods
//! and should be short (5 s), the notice's wakes a person and should be
//! long (60 s); the taint's clock is in the reconciler's memory (a taint
//! is a level, written again to the same effect), the notice's is in the
//! store (`worker_incidents`: an edge, told once across replicas and
//! restarts).

pub mod enrollment;
pub mod hub;
pub mod limits;
pub mod queries;
pub mod replicas;
pub mod session;
pub mod status;

use minispod_proto::v1 as pb;

use crate::store::timestamp;
use queries::WorkerRow;

impl From<&WorkerRow> for pb::Worker {
    fn from(w: &WorkerRow) -> Self {
        let status = status::from_db(&w.status);
        pb::Worker {
            id: w.id.clone(),
            name: w.name.clone(),
            status: status as i32,
            online: w.online,
            ready: w.ready,
            schedulable: status == pb::WorkerStatus::Active && !w.cordoned,
            cordoned: w.cordoned,
            machine_id: w.machine_id.clone(),
            ip_address: w.ip_address.clone(),
            cpu_model: w.cpu_model.clone(),
            cpu_cores: w.cpu_cores as i32,
            architecture: w.architecture.clone(),
            memory_bytes: w.memory_bytes,
            storage_bytes: w.storage_bytes,
            os: w.os.clone(),
            kernel_version: w.kernel_version.clone(),
            kubelet_version: w.kubelet_version.clone(),
            container_runtime: w.container_runtime.clone(),
            agent_version: w.agent_version.clone(),
            labels: serde_json::from_str(&w.labels).unwrap_or_default(),
            taints: serde_json::from_str::<Vec<queries::TaintJson>>(&w.taints)
                .unwrap_or_default()
                .into_iter()
                .map(|t| pb::Taint {
                    key: t.key,
                    value: t.value,
                    effect: t.effect,
                })
                .collect(),
            notes: w.notes.clone(),
            allocatable: Some(pb::WorkerResources {
                cpu_millicores: w.allocatable_cpu_millicores,
                memory_bytes: w.allocatable_memory_bytes,
                storage_bytes: w.allocatable_storage_bytes,
                pods: w.allocatable_pods,
            }),
            allocated: Some(pb::WorkerResources {
                cpu_millicores: w.allocated_cpu_millicores,
                memory_bytes: w.allocated_memory_bytes,
                storage_bytes: w.allocated_storage_bytes,
                pods: w.allocated_pods,
            }),
            cpu_used_percent: w.cpu_used_percent,
            memory_used_bytes: w.memory_used_bytes,
            storage_used_bytes: w.storage_used_bytes,
            pod_count: w.pod_count as i32,
            max_pods: w.max_pods as i32,
            last_heartbeat_at: w.last_heartbeat_at.map(timestamp),
            last_health_check_at: w.last_health_check_at.map(timestamp),
            certificate_expires_at: Some(timestamp(w.cert_expires_at)),
            k3s_join_error: w.k3s_join_error.clone(),
            enrolled_at: Some(timestamp(w.enrolled_at)),
            created_at: Some(timestamp(w.created_at)),
            updated_at: Some(timestamp(w.updated_at)),
            not_ready_reason: not_ready_reason(w, status),
            not_ready_hint: not_ready_hint(w, status),
            // The cluster link adds these from its view of the node.
            node: None,
            drain: None,
            capacity: None,
            takeover: w.takeover_machine_id.as_ref().map(|m| pb::WorkerTakeover {
                machine_id: m.clone(),
                ip_address: w.takeover_ip_address.clone(),
                requested_at: w.takeover_requested_at.map(timestamp),
                approved_at: w.takeover_approved_at.map(timestamp),
            }),
        }
    }
}

/// How an administrator fixes what [`not_ready_reason`] names, with the
/// command to run; empty when there is nothing to fix.
fn not_ready_hint(w: &WorkerRow, status: pb::WorkerStatus) -> String {
    use minispod_support::kubernetes::WORKER_ID_LABEL;
    let (host, id) = (&w.name, &w.id);
    if status != pb::WorkerStatus::NotReady {
        String::new()
    } else if !w.ready {
        format!(
            "the agent's K3s join hook has not succeeded: on {host}, read `journalctl -u \
             minispod-agent -u k3s-agent`; install the K3s agent if it is missing (`curl -sfL \
             https://get.k3s.io | INSTALL_K3S_EXEC=agent INSTALL_K3S_SKIP_START=true sh -`) \
             and run `systemctl enable --now k3s-agent`; the agent retries its hook by itself"
        )
    } else if w.node_reason.starts_with("node not joined") && !w.kubernetes_node.is_empty() {
        let node = &w.kubernetes_node;
        format!(
            "the agent runs on node {node}, which the cluster does not show with this worker's \
             id: check `kubectl get node {node} --show-labels`, then run `kubectl label node \
             {node} {WORKER_ID_LABEL}={id} --overwrite`"
        )
    } else if w.node_reason.starts_with("node not joined") {
        format!(
            "no Kubernetes node carries {WORKER_ID_LABEL}={id}: if K3s already runs on {host}, \
             run `kubectl label node {host} {WORKER_ID_LABEL}={id}`; otherwise on {host} run \
             `systemctl enable --now k3s-agent` (the agent wrote the join settings and the \
             label to /etc/rancher/k3s/config.yaml)"
        )
    } else if w.node_reason.starts_with("node not ready") {
        format!(
            "on {host}, run `systemctl restart k3s-agent` and read `journalctl -u k3s-agent`; \
             `kubectl describe node` shows the kubelet's conditions"
        )
    } else {
        String::new()
    }
}

/// Why a worker is NOT_READY: the agent's own readiness first (with the K3s
/// join hook's error, which is the usual cause), then its node's.
fn not_ready_reason(w: &WorkerRow, status: pb::WorkerStatus) -> String {
    if status != pb::WorkerStatus::NotReady {
        String::new()
    } else if !w.ready && !w.k3s_join_error.is_empty() {
        format!("agent not ready: {}", w.k3s_join_error)
    } else if !w.ready {
        "agent not ready".into()
    } else {
        w.node_reason.clone()
    }
}

/// Unix ms as RFC 3339 in UTC, to the second: `2026-12-02T14:05:28Z`
/// (the notices' times, and a takeover refusal's last sighting).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
