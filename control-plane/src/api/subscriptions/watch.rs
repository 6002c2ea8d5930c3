//! WatchSubscriptions: a caller's subscriptions (or every one, for an
//! administrator asking `all`), then their changes.

use minispod_proto::v1 as pb;
use tonic::Request;

use super::rpc::{SubscriptionApi, WatchStream};
use crate::{
    api::{access::caller, watch},
    auth::CallerCheck,
    error::AppResult,
    store::Page,
    subscriptions::{
        Change, Subscriptions,
        admission::is_admin,
        queries::{self, Filter, SubscriptionRow},
        words,
    },
};

impl SubscriptionApi {
    /// Opens a WatchSubscriptions stream.
    pub(super) async fn watch(
        &self,
        request: Request<pb::WatchSubscriptionsRequest>,
    ) -> AppResult<WatchStream> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let admin = is_admin(&caller);
        if r.all && !admin {
            return Err(admin_required_for_all());
        }
        if !r.id.is_empty() {
            self.visible(&caller, &r.id).await?;
        }
        let check = CallerCheck {
            auth: self.auth.clone(),
            credentials: request.metadata().clone(),
            every: self.limits.caller_recheck,
            admin: false,
        };
        let feed = SubscriptionsFeed {
            subs: self.subs.clone(),
            owner: (!r.all).then(|| caller.id.clone()),
            only: (!r.id.is_empty()).then(|| r.id.clone()),
            admin,
        };
        let changes = self.subs.changes();
        Ok(watch::spawn(feed, changes, check, std::future::pending()))
    }
}

/// PERMISSION_DENIED for a customer asking to watch everyone's.
fn admin_required_for_all() -> crate::error::AppError {
    crate::error::AppError::PermissionDenied("all requires ROLE_ADMINISTRATOR".into())
}

/// One WatchSubscriptions stream.
struct SubscriptionsFeed {
    subs: Subscriptions,
    /// Only this owner's (None: everyone's).
    owner: Option<String>,
    /// Only this subscription.
    only: Option<String>,
    /// Whether the watcher is an administrator (sees the operator's view).
    admin: bool,
}

impl SubscriptionsFeed {
    fn keeps(&self, row: &SubscriptionRow) -> bool {
        self.owner.as_ref().is_none_or(|o| &row.user_id == o)
            && self.only.as_ref().is_none_or(|i| &row.id == i)
    }
}

fn event(
    kind: pb::SubscriptionEventType,
    s: pb::Subscription,
    e: Option<pb::SubscriptionEvent>,
) -> pb::WatchSubscriptionsResponse {
    pb::WatchSubscriptionsResponse {
        r#type: kind as i32,
        subscription: Some(s),
        event: e,
    }
}

#[tonic::async_trait]
impl watch::Feed for SubscriptionsFeed {
    type Change = Change;
    type Message = pb::WatchSubscriptionsResponse;
    const PAGE: i64 = 200;

    async fn snapshot(&mut self, page: Page) -> AppResult<(Vec<Self::Message>, i64)> {
        let filter = Filter {
            user_id: self.owner.clone().unwrap_or_default(),
            ..Filter::default()
        };
        let (rows, _) = queries::list(self.subs.db(), &filter, page).await?;
        let n = rows.len() as i64;
        let rows: Vec<SubscriptionRow> = rows.into_iter().filter(|r| self.keeps(r)).collect();
        let list = self.subs.to_pb_many(&rows, self.admin).await?;
        let messages = list
            .into_iter()
            .map(|s| event(pb::SubscriptionEventType::Snapshot, s, None))
            .collect();
        Ok((messages, n))
    }

    fn snapshot_end(&self) -> Self::Message {
        event(
            pb::SubscriptionEventType::SnapshotEnd,
            pb::Subscription::default(),
            None,
        )
    }

    async fn change(&mut self, change: Change) -> Vec<Self::Message> {
        match change {
            Change::Upserted(id, e) => {
                let Ok(Some(row)) = queries::get(self.subs.db(), &id).await else {
                    return Vec::new();
                };
                if !self.keeps(&row) {
                    return Vec::new();
                }
                let Ok(s) = self.subs.to_pb(&row, self.admin).await else {
                    return Vec::new();
                };
                let admin = self.admin;
                let e = e.map(|mut e| {
                    if !admin {
                        e.reason = words::for_customer(&e.reason);
                    }
                    e
                });
                vec![event(pb::SubscriptionEventType::Upserted, s, e)]
            }
            Change::Deleted(id, user) => {
                if self.owner.as_ref().is_some_and(|o| o != &user)
                    || self.only.as_ref().is_some_and(|i| i != &id)
                {
                    return Vec::new();
                }
                vec![event(
                    pb::SubscriptionEventType::Deleted,
                    pb::Subscription {
                        id,
                        ..Default::default()
                    },
                    None,
                )]
            }
        }
    }
}
