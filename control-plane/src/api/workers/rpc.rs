//! WorkerService: fleet administration, for administrators only.

use std::{collections::BTreeMap, sync::Arc};

use minispod_proto::v1::{self as pb, WorkerStatus, worker_service_server::WorkerService};
use tonic::{Request, Response, Status};

use super::{
    changes::{parse_status_filter, removed_machine},
    watch::WorkersFeed,
};
use crate::api::{access::caller, watch};
use crate::{
    auth::{AuthState, CallerCheck},
    cluster::{ClusterLink, view::Resources},
    error::AppError,
    store::Page,
    workers::{
        hub::FleetHub,
        queries::{self as workers_db, StateChange, WorkerFilter},
        status,
    },
};

/// The gRPC WorkerService.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    pub(super) auth: AuthState,
    pub(super) hub: FleetHub,
    pub(super) counts: Arc<workers_db::CountCache>,
    /// The CA pin handed out with enrollment tokens (`sha256:<hex>`).
    pub(super) ca_hash: String,
    /// The URL agents reach this control plane at, handed out likewise.
    pub(super) agent_url: String,
    /// How often a WatchWorkers stream checks that its caller may still
    /// watch (`--stream-caller-recheck`).
    pub(super) caller_recheck: std::time::Duration,
    /// The cluster link, when startup gave one ([`WorkerApi::with_cluster`]).
    pub(super) cluster: Option<ClusterLink>,
}

impl WorkerApi {
    /// The service over the fleet; `ca_hash` is the pin agents check and
    /// `agent_url` where they connect, both returned with new tokens.
    pub fn new(
        auth: AuthState,
        hub: FleetHub,
        ca_hash: String,
        agent_url: String,
        caller_recheck: std::time::Duration,
    ) -> Self {
        WorkerApi {
            auth,
            hub,
            ca_hash,
            agent_url,
            caller_recheck,
            counts: Arc::default(),
            cluster: None,
        }
    }

    /// The same, showing what `cluster` says of the nodes.
    pub fn with_cluster(self, cluster: ClusterLink) -> Self {
        WorkerApi {
            cluster: Some(cluster),
            ..self
        }
    }
}

type WatchStream = watch::WatchStream<pb::WatchWorkersResponse>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let r = request.into_inner();
        let page = Page::parse(r.page_size, &r.page_token)?;
        let order = pb::WorkerOrder::try_from(r.order_by)
            .map_err(|_| AppError::invalid("order_by", format!("unknown order {}", r.order_by)))?;
        if r.search.chars().count() > 200 {
            return Err(AppError::invalid("search", "must be at most 200 characters").into());
        }
        let filter = WorkerFilter {
            status: parse_status_filter(r.status)?,
            schedulable: r.schedulable,
            ready: r.ready,
            online: r.online,
            search: r.search.trim().to_owned(),
        };
        let (rows, total) =
            workers_db::list(self.hub.db(), &self.counts, &filter, order, page).await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: rows.iter().map(|r| self.hub.worker(r)).collect(),
            next_page_token: page.next_token(total),
            total_size: total,
        }))
    }

    async fn get_worker(
        &self,
        request: Request<pb::GetWorkerRequest>,
    ) -> Result<Response<pb::GetWorkerResponse>, Status> {
        let row = match &request.get_ref().lookup {
            Some(
                pb::get_worker_request::Lookup::Id(key) | pb::get_worker_request::Lookup::Name(key),
            ) if !key.trim().is_empty() => workers_db::resolve(self.hub.db().read(), key).await?,
            _ => return Err(AppError::invalid("lookup", "give an id or a name").into()),
        };
        Ok(Response::new(pb::GetWorkerResponse {
            worker: Some(self.hub.worker(&row)),
        }))
    }

    async fn update_worker(
        &self,
        request: Request<pb::UpdateWorkerRequest>,
    ) -> Result<Response<pb::UpdateWorkerResponse>, Status> {
        let worker = self.update(request.into_inner()).await?;
        Ok(Response::new(pb::UpdateWorkerResponse {
            worker: Some(worker),
        }))
    }

    async fn delete_worker(
        &self,
        request: Request<pb::DeleteWorkerRequest>,
    ) -> Result<Response<pb::DeleteWorkerResponse>, Status> {
        let admin = caller(&request)?;
        // One transaction: the worker goes and its machine is recorded as
        // removed, so the agent cannot re-enroll in between.
        let mut tx = self.hub.db().begin().await?;
        let id = &workers_db::resolve(&mut tx, &request.get_ref().id)
            .await?
            .id;
        let Some(worker) = workers_db::delete_and_remove_machine(&mut tx, id, &admin.id).await?
        else {
            return Err(AppError::NotFound(format!("no worker with id {id:?}")).into());
        };
        tx.commit().await.map_err(AppError::from)?;
        // Deleting the row voids its certificate (Connect and Renew look the
        // worker up); closing the stream ends the live session now.
        self.hub.disconnect(id);
        self.hub.publish_deleted(id);
        tracing::info!(by = %admin.id, worker_id = %id, machine_id = %worker.machine_id, "worker deleted; its machine stays out until readmitted");
        Ok(Response::new(pb::DeleteWorkerResponse {}))
    }

    async fn set_worker_status(
        &self,
        request: Request<pb::SetWorkerStatusRequest>,
    ) -> Result<Response<pb::SetWorkerStatusResponse>, Status> {
        let r = request.into_inner();
        let maintenance = match WorkerStatus::try_from(r.status) {
            Ok(WorkerStatus::Maintenance) => true,
            Ok(WorkerStatus::Active) => false,
            _ => {
                return Err(AppError::invalid(
                    "status",
                    "must be WORKER_STATUS_MAINTENANCE or WORKER_STATUS_ACTIVE (to leave maintenance)",
                )
                .into());
            }
        };
        let worker = self
            .state(
                &r.id,
                StateChange {
                    maintenance: Some(maintenance),
                    ..Default::default()
                },
            )
            .await?;
        Ok(Response::new(pb::SetWorkerStatusResponse {
            worker: Some(worker),
        }))
    }

    async fn set_worker_schedulable(
        &self,
        request: Request<pb::SetWorkerSchedulableRequest>,
    ) -> Result<Response<pb::SetWorkerSchedulableResponse>, Status> {
        let r = request.into_inner();
        let worker = self
            .state(
                &r.id,
                StateChange {
                    cordoned: Some(!r.schedulable),
                    ..Default::default()
                },
            )
            .await?;
        Ok(Response::new(pb::SetWorkerSchedulableResponse {
            worker: Some(worker),
        }))
    }

    async fn get_worker_stats(
        &self,
        _request: Request<pb::GetWorkerStatsRequest>,
    ) -> Result<Response<pb::GetWorkerStatsResponse>, Status> {
        let (t, by) = workers_db::stats(self.hub.db()).await?;
        let (by_arch, by_os) = by_platform(workers_db::counts_by_platform(self.hub.db()).await?);
        let (online, online_source) = match self.cluster.as_ref().filter(|c| c.is_linked()) {
            Some(c) => (
                OnlineTotals::of_nodes(&workers_db::online_ids(self.hub.db()).await?, c),
                pb::FiguresSource::Nodes,
            ),
            None => (
                OnlineTotals::of_agents(&workers_db::online_totals(self.hub.db()).await?),
                pb::FiguresSource::Machines,
            ),
        };
        let count = |s: WorkerStatus| {
            by.iter()
                .find(|(n, _)| n == status::to_db(s))
                .map_or(0, |(_, c)| *c)
        };
        let pct = |used: f64, cap: f64| {
            if cap > 0.0 {
                (used / cap * 100.0).clamp(0.0, 100.0)
            } else {
                0.0
            }
        };
        let capacity_cpu = t.cpu_cores * 1000;
        Ok(Response::new(pb::GetWorkerStatsResponse {
            total: t.total,
            online: t.online,
            offline: t.total - t.online,
            schedulable: t.schedulable,
            by_status: [
                WorkerStatus::Pending,
                WorkerStatus::Active,
                WorkerStatus::Inactive,
                WorkerStatus::Maintenance,
                WorkerStatus::NotReady,
            ]
            .into_iter()
            .map(|s| pb::StatusCount {
                status: s as i32,
                count: count(s),
            })
            .collect(),
            capacity: Some(pb::WorkerResources {
                cpu_millicores: capacity_cpu,
                memory_bytes: t.memory_bytes,
                storage_bytes: t.storage_bytes,
                pods: t.max_pods,
            }),
            allocatable: Some(pb::WorkerResources {
                cpu_millicores: t.allocatable_cpu_millicores,
                memory_bytes: t.allocatable_memory_bytes,
                storage_bytes: t.allocatable_storage_bytes,
                pods: t.allocatable_pods,
            }),
            used: Some(pb::WorkerResources {
                cpu_millicores: t.used_cpu_millicores.round() as i64,
                memory_bytes: t.memory_used_bytes,
                storage_bytes: t.storage_used_bytes,
                pods: t.pod_count,
            }),
            cpu_utilization_percent: pct(t.used_cpu_millicores, capacity_cpu as f64),
            memory_utilization_percent: pct(t.memory_used_bytes as f64, t.memory_bytes as f64),
            storage_utilization_percent: pct(t.storage_used_bytes as f64, t.storage_bytes as f64),
            online_capacity: Some(online.capacity.to_pb()),
            online_allocatable: Some(online.allocatable.to_pb()),
            allocated: Some(online.allocated.to_pb()),
            headroom: Some(online.headroom.to_pb()),
            by_architecture: by_arch,
            by_os,
            cluster_link: self
                .cluster
                .as_ref()
                .map_or(pb::ClusterLinkState::Unlinked, ClusterLink::state)
                as i32,
            online_source: online_source as i32,
        }))
    }

    type WatchWorkersStream = WatchStream;

    async fn watch_workers(
        &self,
        request: Request<pb::WatchWorkersRequest>,
    ) -> Result<Response<Self::WatchWorkersStream>, Status> {
        let check = CallerCheck {
            auth: self.auth.clone(),
            credentials: request.metadata().clone(),
            every: self.caller_recheck,
            admin: true,
        };
        let feed = WorkersFeed {
            hub: self.hub.clone(),
            counts: self.counts.clone(),
            include_metrics: request.get_ref().include_metrics,
            cluster: self.cluster.clone(),
        };
        let hub = self.hub.clone();
        let closed = async move { hub.closed().await };
        Ok(Response::new(watch::spawn(
            feed,
            self.hub.subscribe(),
            check,
            closed,
        )))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenResponse>, Status> {
        let admin = caller(&request)?;
        let r = self.create_token(&admin.id, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Result<Response<pb::ListEnrollmentTokensResponse>, Status> {
        let rows = workers_db::tokens(self.hub.db(), request.get_ref().include_inactive).await?;
        Ok(Response::new(pb::ListEnrollmentTokensResponse {
            enrollment_tokens: rows.iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_enrollment_token(
        &self,
        request: Request<pb::RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<pb::RevokeEnrollmentTokenResponse>, Status> {
        let admin = caller(&request)?;
        let id = &request.get_ref().id;
        if id.is_empty() {
            return Err(AppError::invalid("id", "is required").into());
        }
        let mut tx = self.hub.db().begin().await?;
        let row = workers_db::revoke_token(&mut tx, id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no enrollment token with id {id:?}")))?;
        tx.commit().await.map_err(AppError::from)?;
        tracing::info!(by = %admin.id, token_id = %id, "enrollment token revoked");
        Ok(Response::new(pb::RevokeEnrollmentTokenResponse {
            enrollment_token: Some((&row).into()),
        }))
    }

    async fn list_removed_machines(
        &self,
        _request: Request<pb::ListRemovedMachinesRequest>,
    ) -> Result<Response<pb::ListRemovedMachinesResponse>, Status> {
        let rows = workers_db::removed_machines(self.hub.db()).await?;
        Ok(Response::new(pb::ListRemovedMachinesResponse {
            removed_machines: rows.iter().map(removed_machine).collect(),
        }))
    }

    async fn readmit_machine(
        &self,
        request: Request<pb::ReadmitMachineRequest>,
    ) -> Result<Response<pb::ReadmitMachineResponse>, Status> {
        let admin = caller(&request)?;
        let removed = self
            .readmit(&admin.id, request.get_ref().machine_id.trim())
            .await?;
        Ok(Response::new(pb::ReadmitMachineResponse {
            removed_machine: Some(removed),
        }))
    }

    async fn approve_worker_takeover(
        &self,
        request: Request<pb::ApproveWorkerTakeoverRequest>,
    ) -> Result<Response<pb::ApproveWorkerTakeoverResponse>, Status> {
        let admin = caller(&request)?;
        let r = request.into_inner();
        let worker = self
            .approve_takeover(&admin.id, &r.id, r.machine_id.trim())
            .await?;
        Ok(Response::new(pb::ApproveWorkerTakeoverResponse {
            worker: Some(worker),
        }))
    }

    async fn get_cluster_link(
        &self,
        _request: Request<pb::GetClusterLinkRequest>,
    ) -> Result<Response<pb::GetClusterLinkResponse>, Status> {
        Ok(Response::new(match self.cluster.as_ref() {
            Some(c) => c.describe(),
            None => ClusterLink::unlinked().describe(),
        }))
    }
}

/// The partial worker a METRICS watch event carries: its id and the
/// heartbeat figures the flush wrote.
/// Workers per architecture and per OS, most common first.
fn by_platform(rows: Vec<(String, String, i64)>) -> (Vec<pb::NamedCount>, Vec<pb::NamedCount>) {
    let mut arch: BTreeMap<String, i64> = BTreeMap::new();
    let mut os: BTreeMap<String, i64> = BTreeMap::new();
    for (a, o, n) in rows {
        *arch.entry(a).or_default() += n;
        *os.entry(o).or_default() += n;
    }
    let ranked = |m: BTreeMap<String, i64>| {
        let mut v: Vec<pb::NamedCount> = m
            .into_iter()
            .map(|(name, count)| pb::NamedCount { name, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        v
    };
    (ranked(arch), ranked(os))
}

/// Capacity, allocatable, allocated and headroom summed over online
/// workers.
#[derive(Debug, Default)]
struct OnlineTotals {
    capacity: Resources,
    allocatable: Resources,
    allocated: Resources,
    headroom: Resources,
}

impl OnlineTotals {
    /// From their nodes, per worker (headroom never below zero on any):
    /// with a linked cluster, a worker without a node offers nothing the
    /// cluster can schedule on.
    fn of_nodes(online: &[String], cluster: &ClusterLink) -> OnlineTotals {
        let mut t = OnlineTotals::default();
        for f in online.iter().filter_map(|id| cluster.figures(id)) {
            t.capacity.add(f.capacity);
            t.allocatable.add(f.allocatable);
            t.allocated.add(f.allocated);
            t.headroom.add(f.allocatable.headroom(f.allocated));
        }
        t
    }

    /// From what their agents report, summed in SQL.
    fn of_agents(r: &workers_db::OnlineTotals) -> OnlineTotals {
        let allocatable = Resources {
            cpu: r.allocatable_cpu_millicores,
            memory: r.allocatable_memory_bytes,
            storage: r.allocatable_storage_bytes,
            pods: r.allocatable_pods,
        };
        let allocated = Resources {
            cpu: r.allocated_cpu_millicores,
            memory: r.allocated_memory_bytes,
            storage: r.allocated_storage_bytes,
            pods: r.pod_count,
        };
        OnlineTotals {
            capacity: Resources {
                cpu: r.cpu_cores.saturating_mul(1000),
                memory: r.memory_bytes,
                storage: r.storage_bytes,
                pods: r.max_pods,
            },
            allocatable,
            allocated,
            headroom: allocatable.headroom(allocated),
        }
    }
}
