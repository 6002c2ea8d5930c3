//! HistoryService: charts' questions answered from the stored points,
//! grouped into the asked steps by the database.

use minispod_proto::v1::{self as pb, history_service_server::HistoryService};
use tonic::{Request, Response, Status};

use super::access::caller;
use crate::history::{
    HistorySettings,
    queries::{self, SubscriptionMark},
    window::{Window, window},
};
use crate::{
    auth::AuthState,
    error::{AppError, AppResult},
    store::{now_ms, timestamp},
    subscriptions::{self, queries as subs_db},
    workers::queries as workers_db,
};

/// The gRPC HistoryService.
#[derive(Debug, Clone)]
pub struct HistoryApi {
    auth: AuthState,
    settings: HistorySettings,
}

impl HistoryApi {
    /// The service over the store `auth` holds.
    pub fn new(auth: AuthState, settings: HistorySettings) -> Self {
        HistoryApi { auth, settings }
    }
}

fn duration(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn window_pb(w: &Window) -> pb::HistoryWindow {
    pb::HistoryWindow {
        start: Some(timestamp(w.start)),
        end: Some(timestamp(w.end)),
        step: Some(duration(w.step)),
        resolution: Some(duration(w.resolution)),
    }
}

/// One point per step of `w` from the marks: the status at the end of the
/// step, the statuses held during it, and the restarts within it (a
/// counter that went down, its pods replaced, counts from zero).
pub fn subscription_points(
    w: &Window,
    before: Option<&SubscriptionMark>,
    marks: &[SubscriptionMark],
) -> Vec<pb::SubscriptionPoint> {
    let mut state: Option<(String, i64)> = before.map(|m| (m.status.clone(), m.restarts));
    let mut marks = marks.iter().peekable();
    let mut out = Vec::with_capacity(w.steps().max(0) as usize);
    for i in 0..w.steps() {
        let at = w.start + i * w.step;
        let end = at + w.step;
        let mut statuses: Vec<String> = state.iter().map(|(s, _)| s.clone()).collect();
        let mut restarts = 0;
        while let Some(m) = marks.next_if(|m| m.at < end) {
            if let Some((_, prev)) = &state {
                restarts += if m.restarts >= *prev {
                    m.restarts - prev
                } else {
                    m.restarts
                };
            }
            if statuses.last() != Some(&m.status) {
                statuses.push(m.status.clone());
            }
            state = Some((m.status.clone(), m.restarts));
        }
        let status = state
            .as_ref()
            .map_or(pb::SubscriptionStatus::Unspecified, |(s, _)| {
                subscriptions::status_from_db(s)
            });
        out.push(pb::SubscriptionPoint {
            at: Some(timestamp(at)),
            status: status as i32,
            restarts,
            statuses: statuses
                .iter()
                .map(|s| subscriptions::status_from_db(s) as i32)
                .collect(),
        });
    }
    out
}

impl HistoryApi {
    async fn worker_history(
        &self,
        r: &pb::GetWorkerHistoryRequest,
    ) -> AppResult<pb::GetWorkerHistoryResponse> {
        if r.worker_id.trim().is_empty() {
            return Err(AppError::invalid("worker_id", "is required"));
        }
        let w = window(now_ms(), r.range.as_ref(), r.step.as_ref(), &self.settings)?;
        let db = &self.auth.db;
        if workers_db::by_id(db.read(), &r.worker_id).await?.is_none() {
            return Err(AppError::NotFound(format!(
                "worker {} not found",
                r.worker_id
            )));
        }
        let rows =
            queries::worker_points(db, &r.worker_id, w.resolution, w.start, w.end, w.step).await?;
        Ok(pb::GetWorkerHistoryResponse {
            window: Some(window_pb(&w)),
            points: rows
                .into_iter()
                .map(|(b, s)| {
                    let m = s.mean();
                    pb::ResourcePoint {
                        at: Some(timestamp(w.start + b * w.step)),
                        samples: s.samples,
                        cpu_used_percent: m.cpu_percent,
                        memory_used_bytes: m.memory_used,
                        memory_allocatable_bytes: m.memory_total,
                        storage_used_bytes: m.storage_used,
                        storage_allocatable_bytes: m.storage_total,
                    }
                })
                .collect(),
        })
    }

    async fn fleet_history(
        &self,
        r: &pb::GetFleetHistoryRequest,
    ) -> AppResult<pb::GetFleetHistoryResponse> {
        let w = window(now_ms(), r.range.as_ref(), r.step.as_ref(), &self.settings)?;
        let rows =
            queries::fleet_points(&self.auth.db, w.resolution, w.start, w.end, w.step).await?;
        Ok(pb::GetFleetHistoryResponse {
            window: Some(window_pb(&w)),
            points: rows
                .into_iter()
                .map(|(b, f)| pb::FleetPoint {
                    at: Some(timestamp(w.start + b * w.step)),
                    workers: f.workers,
                    cpu_used_percent: f.cpu_percent,
                    memory_used_bytes: f.memory_used,
                    memory_allocatable_bytes: f.memory_total,
                    storage_used_bytes: f.storage_used,
                    storage_allocatable_bytes: f.storage_total,
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryApi {
    async fn get_worker_history(
        &self,
        request: Request<pb::GetWorkerHistoryRequest>,
    ) -> Result<Response<pb::GetWorkerHistoryResponse>, Status> {
        Ok(Response::new(self.worker_history(request.get_ref()).await?))
    }

    async fn get_fleet_history(
        &self,
        request: Request<pb::GetFleetHistoryRequest>,
    ) -> Result<Response<pb::GetFleetHistoryResponse>, Status> {
        Ok(Response::new(self.fleet_history(request.get_ref()).await?))
    }

    async fn get_subscription_history(
        &self,
        request: Request<pb::GetSubscriptionHistoryRequest>,
    ) -> Result<Response<pb::GetSubscriptionHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        if r.subscription_id.is_empty() {
            return Err(AppError::invalid("subscription_id", "is required").into());
        }
        let w = window(now_ms(), r.range.as_ref(), r.step.as_ref(), &self.settings)?;
        let db = &self.auth.db;
        // As GetSubscription: someone else's is NOT_FOUND, not a refusal.
        match subs_db::get(db, &r.subscription_id).await? {
            Some(row)
                if row.desired != "DELETED"
                    && (caller.role == "ADMINISTRATOR" || row.user_id == caller.id) => {}
            _ => return Err(subs_db::not_found(&r.subscription_id).into()),
        }
        let (before, marks) =
            queries::subscription_marks(db, &r.subscription_id, w.start, w.end).await?;
        let points = subscription_points(&w, before.as_ref(), &marks);
        Ok(Response::new(pb::GetSubscriptionHistoryResponse {
            window: Some(window_pb(&w)),
            total_restarts: points.iter().map(|p| p.restarts).sum(),
            points,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(at: i64, status: &str, restarts: i64) -> SubscriptionMark {
        SubscriptionMark {
            at,
            status: status.into(),
            restarts,
        }
    }

    #[test]
    fn restarts_are_counted_per_step_and_a_short_failure_shows() {
        let w = Window {
            start: 0,
            end: 300,
            step: 100,
            resolution: 100,
        };
        let before = mark(-50, "RUNNING", 2);
        let marks = [
            mark(10, "FAILED", 3),
            mark(20, "RUNNING", 5),
            // Pods replaced: the counter starts again.
            mark(150, "RUNNING", 1),
        ];
        let p = subscription_points(&w, Some(&before), &marks);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].restarts, 3);
        let running = pb::SubscriptionStatus::Running as i32;
        let failed = pb::SubscriptionStatus::Failed as i32;
        assert_eq!(p[0].statuses, vec![running, failed, running]);
        assert_eq!(p[0].status, running);
        assert_eq!(p[1].restarts, 1);
        assert_eq!((p[2].restarts, p[2].statuses.clone()), (0, vec![running]));
    }

    #[test]
    fn steps_before_the_first_mark_have_no_status_and_its_restarts_are_a_baseline() {
        let w = Window {
            start: 0,
            end: 200,
            step: 100,
            resolution: 100,
        };
        let p = subscription_points(&w, None, &[mark(120, "PROVISIONING", 4)]);
        assert_eq!(p[0].status, pb::SubscriptionStatus::Unspecified as i32);
        assert!(p[0].statuses.is_empty());
        assert_eq!(p[1].restarts, 0);
        assert_eq!(p[1].status, pb::SubscriptionStatus::Provisioning as i32);
    }
}
