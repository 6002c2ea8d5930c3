//! Customers' own domains (issue #25): a host name of the customer's
//! (`shop.example.com`) attached to a subscription once it is proven to
//! point at this installation.
//!
//! 1. `AddSubscriptionDomain` (`Subscriptions::add_domain`) parses the host
//!    (`fields.rs`), stores it PENDING with a random token, one live claim
//!    per host (a unique index: ALREADY_EXISTS without saying whose), and
//!    queues the owner on the domain loop.
//! 2. The domain loop (`reconcile.rs`, one `WorkQueue` keyed by the owner's
//!    user id) keeps the owner's namespace holding what `objects.rs`
//!    renders: while a domain is pending the token responder and an Ingress
//!    for `http://<host>/.well-known/minispod/<token>` → the responder.
//! 3. The loop fetches that URL itself (`check.rs`): the answer is the
//!    token only if `<host>` reaches the cluster's ingress. A miss is
//!    retried with backoff (`--domain-check-every`, doubled to
//!    `--domain-check-max`), and after `--domain-check-give-up` the domain
//!    is FAILED with the last check's words, and its host is free again.
//! 4. Verified: the domain's Ingress now routes `<host>/` to the
//!    subscription's exposed Service, with TLS through
//!    `--custom-domain-issuer` (cert-manager; its Certificate's Ready
//!    condition, read with the dynamic API, gives CERTIFICATE_ISSUED or
//!    CERTIFICATE_FAILING). The subscription's own Ingress and
//!    `<name>.<apps-domain>` are left as they are.
//! 5. Removed (or its subscription deleted): the Ingress and the TLS Secret
//!    are deleted, then the row.
//!
//! Why an Ingress per domain, not more hosts on the subscription's own: a
//! cert-manager issuer is an annotation of the whole Ingress, and the
//! apps domain's issuer (often DNS-01 for a wildcard) is rarely the one
//! that can issue for customers' names (HTTP-01); a domain's objects come
//! and go without touching the subscription's (its rollouts, its
//! generation); removing a domain is deleting its own objects.

pub mod check;
pub mod fields;
pub mod objects;
pub mod queries;
mod reconcile;

use std::time::Duration;

use minispod_proto::v1 as pb;
use rand::RngCore;

use super::{Subscriptions, queries::SubscriptionRow, render};
use crate::{
    error::{AppError, AppResult},
    store::{new_id, now_ms, timestamp},
};
use queries::DomainRow;
pub use reconcile::spawn;

/// How customers' domains are checked and served.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    /// The cert-manager ClusterIssuer of verified domains' certificates
    /// (`--custom-domain-issuer`, else `--cert-issuer`); empty for none.
    pub issuer: String,
    /// The first retry of a failed ownership check (doubled each time).
    pub check_every: Duration,
    /// The longest wait between two checks.
    pub check_max: Duration,
    /// How long a domain may stay PENDING before it is FAILED.
    pub give_up: Duration,
    /// Where a host is reached instead of where DNS says.
    pub resolve: Vec<check::ResolveRule>,
    /// How many domains one subscription may hold (FAILED ones aside).
    pub per_subscription: i64,
}

impl Default for DomainSettings {
    fn default() -> Self {
        DomainSettings {
            issuer: String::new(),
            check_every: Duration::from_secs(10),
            check_max: Duration::from_secs(600),
            give_up: Duration::from_secs(24 * 3600),
            resolve: Vec::new(),
            per_subscription: 5,
        }
    }
}

impl DomainSettings {
    /// The wait after the `checks`-th failed check: `check_every` doubled
    /// `checks - 1` times, at most `check_max`.
    pub fn retry_after(&self, checks: i64) -> Duration {
        let doublings = checks.clamp(1, 20) as u32 - 1;
        self.check_every
            .saturating_mul(1u32 << doublings)
            .min(self.check_max)
    }
}

/// A new domain token: 16 random bytes in hex (a ConfigMap key and a path
/// segment as they are).
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    minispod_support::hex(&bytes)
}

/// The API's state of a stored one.
pub fn state_from_db(s: &str) -> pb::DomainState {
    use pb::DomainState as D;
    match s {
        "PENDING" => D::Pending,
        "VERIFIED" => D::Verified,
        "CERTIFICATE_ISSUED" => D::CertificateIssued,
        "CERTIFICATE_FAILING" => D::CertificateFailing,
        "FAILED" => D::Failed,
        _ => D::Unspecified,
    }
}

fn at(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| timestamp(ms))
}

impl Subscriptions {
    /// The domain loop's queue (key: user id).
    fn domain_queue(&self) -> &crate::workqueue::WorkQueue<String> {
        &self.inner.domain_queue
    }

    /// `d` of subscription `sub` as the API shows it.
    pub fn domain_to_pb(&self, sub: &SubscriptionRow, d: &DomainRow) -> pb::SubscriptionDomain {
        pb::SubscriptionDomain {
            id: d.id.clone(),
            subscription_id: d.subscription_id.clone(),
            host: d.host.clone(),
            state: state_from_db(&d.state) as i32,
            reason: d.reason.clone(),
            dns_target: render::host(&sub.name, &self.settings().render),
            check_url: check::check_url(&d.host, &d.token),
            url: format!("https://{}", d.host),
            created_at: Some(timestamp(d.created_at)),
            checked_at: at(d.checked_at),
            next_check_at: if d.state == "PENDING" {
                at(d.next_check_at)
            } else {
                None
            },
            verified_at: at(d.verified_at),
        }
    }

    /// The attached domains of `sub`, oldest first.
    pub async fn domains_of(
        &self,
        sub: &SubscriptionRow,
    ) -> AppResult<Vec<pb::SubscriptionDomain>> {
        Ok(queries::of_subscription(self.db(), &sub.id)
            .await?
            .iter()
            .map(|d| self.domain_to_pb(sub, d))
            .collect())
    }

    /// Attaches `raw_host` to `sub`, PENDING, and queues its check. The
    /// caller checked that it may change `sub`.
    pub async fn add_domain(
        &self,
        sub: &SubscriptionRow,
        raw_host: &str,
    ) -> AppResult<pb::SubscriptionDomain> {
        let settings = &self.settings().domains;
        let host = fields::parse_host(raw_host, &self.settings().render.apps_domain)
            .map_err(|m| AppError::invalid("host", m))?;
        if reconcile::exposed(sub).is_none() {
            return Err(AppError::FailedPrecondition(format!(
                "{} serves no web address, so it cannot answer on a domain",
                sub.name
            )));
        }
        let now = now_ms();
        let row = DomainRow {
            id: new_id(),
            subscription_id: sub.id.clone(),
            user_id: sub.user_id.clone(),
            host,
            token: new_token(),
            state: "PENDING".into(),
            reason: "waiting for the first check".into(),
            checks: 0,
            created_at: now,
            checked_at: 0,
            // The cluster needs a moment to route the check URL.
            next_check_at: now + settings.check_every.as_millis() as i64,
            verified_at: 0,
            removed_at: 0,
        };
        let mut tx = self.db().begin().await?;
        let live = super::queries::get_in(&mut tx, &sub.id).await?;
        if live.is_none_or(|s| s.desired == "DELETED") {
            return Err(super::queries::not_found(&sub.id));
        }
        if queries::count_live(&mut tx, &sub.id).await? >= settings.per_subscription {
            return Err(AppError::ResourceExhausted {
                message: format!(
                    "a subscription may have at most {} domains; remove one first",
                    settings.per_subscription
                ),
                retry_after: None,
            });
        }
        queries::drop_failed(&mut tx, &sub.id, &row.host).await?;
        queries::insert(&mut tx, &row).await?;
        tx.commit().await?;
        tracing::info!(subscription = %sub.id, domain = %row.id, host = %row.host, "domain added");
        self.domain_queue().add_now(sub.user_id.clone());
        Ok(self.domain_to_pb(sub, &row))
    }

    /// Detaches domain `id` from `sub`: the host is free at once; the loop
    /// deletes its objects, then the row.
    pub async fn remove_domain(&self, sub: &SubscriptionRow, id: &str) -> AppResult<()> {
        if id.is_empty() {
            return Err(AppError::invalid("domain_id", "is required"));
        }
        let mut tx = self.db().begin().await?;
        if !queries::mark_removed(&mut tx, id, &sub.id, now_ms()).await? {
            return Err(AppError::NotFound(format!("domain {id} not found")));
        }
        tx.commit().await?;
        tracing::info!(subscription = %sub.id, domain = %id, "domain removed");
        self.domain_queue().add_now(sub.user_id.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_back_off_by_doubling_up_to_the_ceiling() {
        let s = DomainSettings {
            check_every: Duration::from_secs(10),
            check_max: Duration::from_secs(60),
            ..DomainSettings::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| s.retry_after(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert_eq!(s.retry_after(i64::MAX).as_secs(), 60);
    }

    #[test]
    fn tokens_are_32_hex_digits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
