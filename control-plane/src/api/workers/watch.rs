//! WatchWorkers: every worker, then the fleet's changes.

use std::sync::Arc;

use minispod_proto::v1 as pb;

use crate::{
    api::watch,
    error::AppResult,
    store::{Page, now_ms, timestamp},
    workers::{
        hub::{FleetHub, TimedEvent, WorkerEvent},
        queries::{self as workers_db, WorkerFilter},
    },
};

/// One WatchWorkers stream: every worker, then the fleet's changes.
pub(super) struct WorkersFeed {
    pub(super) hub: FleetHub,
    pub(super) counts: Arc<workers_db::CountCache>,
    pub(super) include_metrics: bool,
    /// The cluster link, whose node figures ride along with the metrics.
    pub(super) cluster: Option<crate::cluster::ClusterLink>,
}

fn worker_event(
    kind: pb::WorkerEventType,
    worker: pb::Worker,
    at: i64,
) -> pb::WatchWorkersResponse {
    pb::WatchWorkersResponse {
        r#type: kind as i32,
        worker: Some(worker),
        observed_at: Some(timestamp(at)),
    }
}

#[tonic::async_trait]
impl watch::Feed for WorkersFeed {
    type Change = TimedEvent;
    type Message = pb::WatchWorkersResponse;
    const PAGE: i64 = 500;

    async fn snapshot(&mut self, page: Page) -> AppResult<(Vec<Self::Message>, i64)> {
        let (rows, _) = workers_db::list(
            self.hub.db(),
            &self.counts,
            &WorkerFilter::default(),
            pb::WorkerOrder::NameAsc,
            page,
        )
        .await?;
        let n = rows.len() as i64;
        let messages = rows
            .iter()
            .map(|row| {
                worker_event(
                    pb::WorkerEventType::Snapshot,
                    self.hub.worker(row),
                    now_ms(),
                )
            })
            .collect();
        Ok((messages, n))
    }

    fn snapshot_end(&self) -> Self::Message {
        worker_event(
            pb::WorkerEventType::SnapshotEnd,
            pb::Worker::default(),
            now_ms(),
        )
    }

    async fn change(&mut self, (change, at): TimedEvent) -> Vec<Self::Message> {
        match change {
            WorkerEvent::Upserted(w) => vec![worker_event(pb::WorkerEventType::Upserted, *w, at)],
            WorkerEvent::Deleted(id) => vec![worker_event(
                pb::WorkerEventType::Deleted,
                pb::Worker {
                    id,
                    ..Default::default()
                },
                at,
            )],
            WorkerEvent::Metrics(_) if !self.include_metrics => Vec::new(),
            WorkerEvent::Metrics(batch) => batch
                .iter()
                .map(|(id, m)| {
                    let mut update = metrics_update(id, m);
                    if let Some(c) = &self.cluster {
                        c.decorate_figures(&mut update);
                    }
                    worker_event(pb::WorkerEventType::Metrics, update, at)
                })
                .collect(),
        }
    }
}

pub(super) fn metrics_update(id: &str, m: &workers_db::HeartbeatMetrics) -> pb::Worker {
    pb::Worker {
        id: id.to_owned(),
        cpu_used_percent: m.cpu_used_percent,
        memory_used_bytes: m.memory_used_bytes,
        storage_used_bytes: m.storage_used_bytes,
        pod_count: i32::try_from(m.pod_count).unwrap_or(i32::MAX),
        allocatable: Some(pb::WorkerResources {
            cpu_millicores: m.allocatable_cpu_millicores,
            memory_bytes: m.allocatable_memory_bytes,
            storage_bytes: m.allocatable_storage_bytes,
            pods: m.allocatable_pods,
        }),
        last_heartbeat_at: Some(timestamp(m.at)),
        ..Default::default()
    }
}
