//! WorkerService: fleet administration, for administrators only.

use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use minispod_proto::v1::{self as pb, WorkerStatus, worker_service_server::WorkerService};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    enrollment::{NewToken, store_new_token, validate_facts},
    hub::{FleetHub, WorkerEvent},
    queries::{self as workers_db, RemovedMachineRow, StateChange, TaintJson, WorkerFilter},
    session::change_state,
    status,
};
use crate::{
    auth::AuthState,
    cluster::{ClusterLink, view::Resources},
    error::{AppError, AppResult, Violations},
    store::{Page, now_ms, timestamp},
};

/// The gRPC WorkerService.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    auth: AuthState,
    hub: FleetHub,
    counts: Arc<workers_db::CountCache>,
    /// The CA pin handed out with enrollment tokens (`sha256:<hex>`).
    ca_hash: String,
    /// The URL agents reach this control plane at, handed out likewise.
    agent_url: String,
    /// The cluster link, when startup gave one ([`WorkerApi::with_cluster`]).
    cluster: Option<ClusterLink>,
}

impl WorkerApi {
    /// The service over the fleet; `ca_hash` is the pin agents check and
    /// `agent_url` where they connect, both returned with new tokens.
    pub fn new(auth: AuthState, hub: FleetHub, ca_hash: String, agent_url: String) -> Self {
        WorkerApi {
            auth,
            hub,
            ca_hash,
            agent_url,
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

fn parse_status_filter(v: i32) -> AppResult<Option<WorkerStatus>> {
    match WorkerStatus::try_from(v) {
        Ok(WorkerStatus::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(AppError::invalid("status", format!("unknown status {v}"))),
    }
}

/// Kubernetes rules, simplified: keys are an optional DNS prefix and a name
/// of at most 63 alphanumerics, dashes, dots and underscores; values at most
/// 63 of the same.
fn label_part_ok(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn label_key_ok(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && !prefix.is_empty()
                && prefix.split('.').all(|l| label_part_ok(l, false))
                && label_part_ok(name, false)
        }
        None => label_part_ok(k, false),
    }
}

impl WorkerApi {
    async fn update(&self, r: pb::UpdateWorkerRequest) -> AppResult<pb::Worker> {
        let mut v = Violations::new();
        let labels = r
            .labels
            .map(|l| l.labels.into_iter().collect::<BTreeMap<_, _>>());
        if let Some(labels) = &labels {
            if labels.len() > 64 {
                v.add("labels", "at most 64 labels");
            }
            for (k, val) in labels {
                if !label_key_ok(k) || !label_part_ok(val, true) {
                    v.add("labels", format!("{k:?}={val:?} is not a valid label"));
                }
            }
        }
        let taints = r.taints.map(|t| t.taints);
        if let Some(taints) = &taints {
            if taints.len() > 32 {
                v.add("taints", "at most 32 taints");
            }
            for t in taints {
                if !label_key_ok(&t.key) || !label_part_ok(&t.value, true) {
                    v.add(
                        "taints",
                        format!("{:?}={:?} is not a valid taint", t.key, t.value),
                    );
                }
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&t.effect.as_str()) {
                    v.add(
                        "taints",
                        format!(
                            "effect {:?} must be NoSchedule, PreferNoSchedule or NoExecute",
                            t.effect
                        ),
                    );
                }
            }
        }
        if r.notes.as_ref().is_some_and(|n| n.chars().count() > 2000) {
            v.add("notes", "must be at most 2000 characters");
        }
        v.finish()?;
        let labels = labels
            .map(|l| serde_json::to_string(&l))
            .transpose()
            .map_err(anyhow::Error::from)?;
        let taints = taints
            .map(|t| {
                let t: Vec<TaintJson> = t
                    .into_iter()
                    .map(|t| TaintJson {
                        key: t.key,
                        value: t.value,
                        effect: t.effect,
                    })
                    .collect();
                serde_json::to_string(&t)
            })
            .transpose()
            .map_err(anyhow::Error::from)?;
        let mut tx = self.hub.db().begin().await?;
        let id = workers_db::resolve(&mut tx, &r.id).await?.id;
        let row = workers_db::update_meta(
            &mut tx,
            &id,
            labels.as_deref(),
            taints.as_deref(),
            r.notes.as_deref(),
        )
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no worker with id {id:?}")))?;
        tx.commit().await?;
        self.hub.publish(&row);
        Ok(self.hub.worker(&row))
    }

    /// Applies `change` to the worker `key` names (its id or its name).
    async fn state(&self, key: &str, change: StateChange<'_>) -> AppResult<pb::Worker> {
        let id = workers_db::resolve(self.hub.db().read(), key).await?.id;
        let row = change_state(&self.hub, &id, change)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no worker with id {id:?}")))?;
        Ok(self.hub.worker(&row))
    }

    async fn create_token(
        &self,
        admin: &str,
        r: pb::CreateEnrollmentTokenRequest,
    ) -> AppResult<pb::CreateEnrollmentTokenResponse> {
        let mut v = Violations::new();
        let ttl = if r.ttl_seconds == 0 {
            86_400
        } else {
            r.ttl_seconds
        };
        if !(60..=31_536_000).contains(&ttl) {
            v.add("ttl_seconds", "must be between 60 and 31536000");
        }
        if !(0..=100_000).contains(&r.max_uses) {
            v.add("max_uses", "must be between 0 and 100000");
        }
        if r.description.chars().count() > 200 {
            v.add("description", "must be at most 200 characters");
        }
        let machine_id = r.machine_id.trim().to_owned();
        if !machine_id.is_empty() {
            let probe = pb::MachineFacts {
                hostname: "h".into(),
                machine_id: machine_id.clone(),
                ..Default::default()
            };
            if validate_facts(&probe).is_err() {
                v.add(
                    "machine_id",
                    "must be 1 to 128 letters, digits, dashes or underscores",
                );
            }
        }
        v.finish()?;
        let (token, row) = store_new_token(
            self.hub.db(),
            NewToken {
                ttl: std::time::Duration::from_secs(ttl.unsigned_abs()),
                max_uses: r.max_uses.unsigned_abs(),
                description: r.description,
                machine_id: Some(machine_id),
            },
            Some(admin),
        )
        .await?;
        Ok(pb::CreateEnrollmentTokenResponse {
            token: token.expose().to_owned(),
            enrollment_token: Some((&row).into()),
            ca_hash: self.ca_hash.clone(),
            server_url: self.agent_url.clone(),
        })
    }
}

fn removed_machine(r: &RemovedMachineRow) -> pb::RemovedMachine {
    pb::RemovedMachine {
        machine_id: r.machine_id.clone(),
        worker_id: r.worker_id.clone(),
        name: r.name.clone(),
        removed_by: r.removed_by.clone().unwrap_or_default(),
        removed_at: Some(timestamp(r.removed_at)),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchWorkersResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.auth.admin(&request).await?;
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
        self.auth.admin(&request).await?;
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
        self.auth.admin(&request).await?;
        let worker = self.update(request.into_inner()).await?;
        Ok(Response::new(pb::UpdateWorkerResponse {
            worker: Some(worker),
        }))
    }

    async fn delete_worker(
        &self,
        request: Request<pb::DeleteWorkerRequest>,
    ) -> Result<Response<pb::DeleteWorkerResponse>, Status> {
        let admin = self.auth.admin(&request).await?;
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
        self.auth.admin(&request).await?;
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
        self.auth.admin(&request).await?;
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
        request: Request<pb::GetWorkerStatsRequest>,
    ) -> Result<Response<pb::GetWorkerStatsResponse>, Status> {
        self.auth.admin(&request).await?;
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
        self.auth.admin(&request).await?;
        let include_metrics = request.get_ref().include_metrics;
        // The caller is checked again while the stream lasts, so it ends
        // soon after the account is deactivated, demoted or deleted, its
        // tokens are revoked, or the access token expires.
        let credentials = request.metadata().clone();
        let auth = self.auth.clone();
        // Subscribe before reading the snapshot, so no change falls between.
        let mut events = self.hub.subscribe();
        let db = self.hub.db().clone();
        let hub = self.hub.clone();
        let cluster = self.cluster.clone();
        let counts = self.counts.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let event =
                |kind: pb::WorkerEventType, worker: pb::Worker, at: i64| pb::WatchWorkersResponse {
                    r#type: kind as i32,
                    worker: Some(worker),
                    observed_at: Some(timestamp(at)),
                };
            'snapshot: loop {
                let mut page = Page {
                    offset: 0,
                    limit: 500,
                };
                loop {
                    let rows = match workers_db::list(
                        &db,
                        &counts,
                        &WorkerFilter::default(),
                        pb::WorkerOrder::NameAsc,
                        page,
                    )
                    .await
                    {
                        Ok((rows, _)) => rows,
                        Err(e) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                    };
                    let n = rows.len() as i64;
                    for row in &rows {
                        if tx
                            .send(Ok(event(
                                pb::WorkerEventType::Snapshot,
                                hub.worker(row),
                                now_ms(),
                            )))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if n < page.limit {
                        break;
                    }
                    page.offset += n;
                }
                if tx
                    .send(Ok(event(
                        pb::WorkerEventType::SnapshotEnd,
                        pb::Worker::default(),
                        now_ms(),
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
                let mut recheck = tokio::time::interval(CALLER_RECHECK);
                recheck.tick().await;
                loop {
                    let item = tokio::select! {
                        item = events.recv() => item,
                        // A send that fails means the client left.
                        () = tx.closed() => return,
                        () = hub.closed() => return,
                        _ = recheck.tick() => {
                            let mut probe = Request::new(());
                            *probe.metadata_mut() = credentials.clone();
                            if let Err(e) = auth.admin(&probe).await {
                                let _ = tx.send(Err(Status::from(e))).await;
                                return;
                            }
                            continue;
                        }
                    };
                    let msg = match item {
                        Ok((WorkerEvent::Upserted(w), at)) => {
                            event(pb::WorkerEventType::Upserted, *w, at)
                        }
                        Ok((WorkerEvent::Deleted(id), at)) => event(
                            pb::WorkerEventType::Deleted,
                            pb::Worker {
                                id,
                                ..Default::default()
                            },
                            at,
                        ),
                        Ok((WorkerEvent::Metrics(_), _)) if !include_metrics => continue,
                        Ok((WorkerEvent::Metrics(batch), at)) => {
                            for (id, m) in batch.iter() {
                                let mut update = metrics_update(id, m);
                                if let Some(c) = &cluster {
                                    c.decorate_figures(&mut update);
                                }
                                let msg = event(pb::WorkerEventType::Metrics, update, at);
                                if tx.send(Ok(msg)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        // Too slow to keep up: start over with a fresh snapshot.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            continue 'snapshot;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenResponse>, Status> {
        let admin = self.auth.admin(&request).await?;
        let r = self.create_token(&admin.id, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Result<Response<pb::ListEnrollmentTokensResponse>, Status> {
        self.auth.admin(&request).await?;
        let rows = workers_db::tokens(self.hub.db(), request.get_ref().include_inactive).await?;
        Ok(Response::new(pb::ListEnrollmentTokensResponse {
            enrollment_tokens: rows.iter().map(Into::into).collect(),
        }))
    }

    async fn revoke_enrollment_token(
        &self,
        request: Request<pb::RevokeEnrollmentTokenRequest>,
    ) -> Result<Response<pb::RevokeEnrollmentTokenResponse>, Status> {
        let admin = self.auth.admin(&request).await?;
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
        request: Request<pb::ListRemovedMachinesRequest>,
    ) -> Result<Response<pb::ListRemovedMachinesResponse>, Status> {
        self.auth.admin(&request).await?;
        let rows = workers_db::removed_machines(self.hub.db()).await?;
        Ok(Response::new(pb::ListRemovedMachinesResponse {
            removed_machines: rows.iter().map(removed_machine).collect(),
        }))
    }

    async fn readmit_machine(
        &self,
        request: Request<pb::ReadmitMachineRequest>,
    ) -> Result<Response<pb::ReadmitMachineResponse>, Status> {
        let admin = self.auth.admin(&request).await?;
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
        let admin = self.auth.admin(&request).await?;
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
        request: Request<pb::GetClusterLinkRequest>,
    ) -> Result<Response<pb::GetClusterLinkResponse>, Status> {
        self.auth.admin(&request).await?;
        Ok(Response::new(match self.cluster.as_ref() {
            Some(c) => c.describe(),
            None => ClusterLink::unlinked().describe(),
        }))
    }
}

impl WorkerApi {
    async fn approve_takeover(
        &self,
        admin: &str,
        key: &str,
        machine_id: &str,
    ) -> AppResult<pb::Worker> {
        if machine_id.is_empty() {
            return Err(AppError::invalid(
                "machine_id",
                "give the machine id the worker's takeover shows",
            ));
        }
        let mut tx = self.hub.db().begin().await?;
        let worker = workers_db::resolve(&mut tx, key).await?;
        match worker.takeover_machine_id.as_deref() {
            None => {
                return Err(AppError::FailedPrecondition(format!(
                    "no machine asked to take over worker {:?}",
                    worker.name
                )));
            }
            Some(m) if m != machine_id => {
                return Err(AppError::FailedPrecondition(format!(
                    "the machine asking to take over worker {:?} is now {m:?}, not {machine_id:?}",
                    worker.name
                )));
            }
            Some(_) => {}
        }
        if worker.online {
            return Err(AppError::FailedPrecondition(format!(
                "worker {:?} is online: its machine still runs, so the asking machine is another \
                 one with the same host name; rename one of them (or delete the worker first)",
                worker.name
            )));
        }
        let row = workers_db::approve_takeover(&mut tx, &worker.id, machine_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no worker with id {:?}", worker.id)))?;
        tx.commit().await?;
        self.hub.publish(&row);
        tracing::warn!(by = admin, worker_id = %row.id, name = %row.name, old_machine_id = %row.machine_id,
            new_machine_id = machine_id, "takeover of the worker approved: the new machine gets it at its next enrollment");
        Ok(self.hub.worker(&row))
    }

    async fn readmit(&self, admin: &str, machine_id: &str) -> AppResult<pb::RemovedMachine> {
        if machine_id.trim().is_empty() {
            return Err(AppError::invalid("machine_id", "is required"));
        }
        let mut tx = self.hub.db().begin().await?;
        let row = workers_db::readmit_machine(&mut tx, machine_id)
            .await?
            .ok_or_else(|| {
                AppError::NotFound(format!("machine {machine_id:?} is not a removed machine"))
            })?;
        tx.commit().await?;
        tracing::info!(by = admin, machine_id, "removed machine readmitted");
        Ok(removed_machine(&row))
    }
}

/// How often a WatchWorkers stream checks that its caller may still watch.
const CALLER_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

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

fn metrics_update(id: &str, m: &workers_db::HeartbeatMetrics) -> pb::Worker {
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
