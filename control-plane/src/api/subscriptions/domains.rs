//! SubscriptionService's domain calls: a customer's own host names on a
//! subscription (`subscriptions::domains`).

use minispod_proto::v1 as pb;
use tonic::Request;

use super::rpc::SubscriptionApi;
use crate::{
    api::access::caller,
    error::{AppError, AppResult},
    subscriptions::queries::SubscriptionRow,
    users::queries::UserRow,
};

impl SubscriptionApi {
    /// The subscription `id` (field `subscription_id`) if `caller` may see
    /// and change it; NOT_FOUND for another customer's.
    async fn domain_owner(&self, caller: &UserRow, id: &str) -> AppResult<SubscriptionRow> {
        if id.is_empty() {
            return Err(AppError::invalid("subscription_id", "is required"));
        }
        self.visible(caller, id).await
    }

    /// AddSubscriptionDomain.
    pub(super) async fn add_domain(
        &self,
        request: Request<pb::AddSubscriptionDomainRequest>,
    ) -> AppResult<pb::AddSubscriptionDomainResponse> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let sub = self.domain_owner(&caller, &r.subscription_id).await?;
        let domain = self.subs.add_domain(&sub, &r.host).await?;
        tracing::info!(subscription = %sub.id, by = %caller.id, host = %domain.host, "domain attached");
        Ok(pb::AddSubscriptionDomainResponse {
            domain: Some(domain),
        })
    }

    /// RemoveSubscriptionDomain.
    pub(super) async fn remove_domain(
        &self,
        request: Request<pb::RemoveSubscriptionDomainRequest>,
    ) -> AppResult<pb::RemoveSubscriptionDomainResponse> {
        let caller = caller(&request)?;
        self.limit_change(&caller).await?;
        let r = request.into_inner();
        let sub = self.domain_owner(&caller, &r.subscription_id).await?;
        self.subs.remove_domain(&sub, &r.domain_id).await?;
        Ok(pb::RemoveSubscriptionDomainResponse {})
    }

    /// ListSubscriptionDomains.
    pub(super) async fn list_domains(
        &self,
        request: Request<pb::ListSubscriptionDomainsRequest>,
    ) -> AppResult<pb::ListSubscriptionDomainsResponse> {
        let caller = caller(&request)?;
        let sub = self
            .domain_owner(&caller, &request.get_ref().subscription_id)
            .await?;
        Ok(pb::ListSubscriptionDomainsResponse {
            domains: self.subs.domains_of(&sub).await?,
        })
    }
}
