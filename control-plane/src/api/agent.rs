//! AgentService: what node agents call.

use std::sync::Arc;

use minispod_proto::v1::{self as pb, agent_service_server::AgentService};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::access::agent;
use crate::{
    backups::Backups,
    error::AppError,
    workers::{
        enrollment::{Enrollment, request_identity},
        hub::FleetHub,
        limits::{WorkerLimiter, WorkerLimits},
        session,
    },
};

/// The gRPC AgentService.
#[derive(Debug, Clone)]
pub struct AgentApi {
    hub: FleetHub,
    enrollment: Enrollment,
    trusted_proxies: Arc<[crate::rate_limit::Cidr]>,
    limits: Arc<WorkerLimits>,
    backups: Option<Backups>,
}

impl AgentApi {
    /// The service over the fleet, limiting each worker by `limits`.
    pub fn new(
        hub: FleetHub,
        enrollment: Enrollment,
        trusted_proxies: Arc<[crate::rate_limit::Cidr]>,
        limits: Arc<WorkerLimits>,
    ) -> Self {
        AgentApi {
            hub,
            enrollment,
            trusted_proxies,
            limits,
            backups: None,
        }
    }

    /// Serves the volume transfers of `backups` to agents.
    pub fn with_backups(mut self, backups: Backups) -> Self {
        self.backups = Some(backups);
        self
    }

    fn backups(&self) -> Result<&Backups, AppError> {
        self.backups
            .as_ref()
            .ok_or_else(|| AppError::FailedPrecondition("backups are not served here".into()))
    }
}

/// Takes one call of `worker_id` from `limiter`, or RESOURCE_EXHAUSTED with
/// the delay in RetryInfo.
fn take(limiter: &WorkerLimiter, worker_id: &str, what: &str) -> Result<(), AppError> {
    limiter
        .take(worker_id)
        .map_err(|wait| AppError::ResourceExhausted {
            message: format!("too many {what} from this worker"),
            retry_after: Some(wait),
        })
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let ip = crate::auth::client_ip(&request, &self.trusted_proxies);
        let peer = request_identity(&request);
        let r = self
            .enrollment
            .enroll(ip, peer, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    type ConnectStream = session::Outbound;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let worker = agent(&request)?;
        take(&self.limits.connect, &worker.id, "connects")?;
        let peer_ip = request.remote_addr().map(|a| a.ip());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(session::run(
            self.hub.clone(),
            self.limits.clone(),
            worker,
            peer_ip,
            inbound,
            tx,
        ));
        Ok(Response::new(session::Outbound(rx)))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let worker = agent(&request)?;
        take(&self.limits.renew, &worker.id, "certificate renewals")?;
        let r = self
            .enrollment
            .renew(&worker, &request.get_ref().csr_pem)
            .await?;
        Ok(Response::new(r))
    }

    async fn claim_transfers(
        &self,
        request: Request<pb::ClaimTransfersRequest>,
    ) -> Result<Response<pb::ClaimTransfersResponse>, Status> {
        let worker = agent(&request)?;
        take(&self.limits.transfers, &worker.id, "transfer claims")?;
        Ok(Response::new(
            self.backups()?.claim_transfers(&worker.id).await?,
        ))
    }

    async fn report_transfer(
        &self,
        request: Request<pb::ReportTransferRequest>,
    ) -> Result<Response<pb::ReportTransferResponse>, Status> {
        let worker = agent(&request)?;
        take(&self.limits.transfers, &worker.id, "transfer reports")?;
        let cancel = self
            .backups()?
            .report_transfer(&worker.id, request.into_inner())
            .await?;
        Ok(Response::new(pb::ReportTransferResponse { cancel }))
    }
}
