//! AgentService: what node agents call.

use minispod_proto::v1::{self as pb, agent_service_server::AgentService};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{enrollment::Enrollment, hub::FleetHub, session};

/// The gRPC AgentService.
#[derive(Debug, Clone)]
pub struct AgentApi {
    hub: FleetHub,
    enrollment: Enrollment,
    trusted_proxies: std::sync::Arc<[crate::rate_limit::Cidr]>,
}

impl AgentApi {
    /// The service over the fleet.
    pub fn new(
        hub: FleetHub,
        enrollment: Enrollment,
        trusted_proxies: std::sync::Arc<[crate::rate_limit::Cidr]>,
    ) -> Self {
        AgentApi {
            hub,
            enrollment,
            trusted_proxies,
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let ip = crate::auth::client_ip(&request, &self.trusted_proxies);
        let r = self.enrollment.enroll(ip, request.into_inner()).await?;
        Ok(Response::new(r))
    }

    type ConnectStream = session::Outbound;

    async fn connect(
        &self,
        request: Request<Streaming<pb::ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (_, worker) = self.enrollment.authenticate_peer(&request).await?;
        let peer_ip = request.remote_addr().map(|a| a.ip());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(session::run(self.hub.clone(), worker, peer_ip, inbound, tx));
        Ok(Response::new(session::Outbound(rx)))
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewCertificateRequest>,
    ) -> Result<Response<pb::RenewCertificateResponse>, Status> {
        let (_, worker) = self.enrollment.authenticate_peer(&request).await?;
        let r = self
            .enrollment
            .renew(&worker, &request.get_ref().csr_pem)
            .await?;
        Ok(Response::new(r))
    }
}
