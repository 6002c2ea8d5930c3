//! Subscription changes relayed between control-plane replicas, so a watch
//! on one replica shows what another replica's API or reconciler changed.
//!
//! On PostgreSQL every change this replica publishes also goes out on the
//! store channel as a small notice naming the subscription; a replica that
//! hears one reads the row (the watch does) and tells its own watchers,
//! and queues the subscription for its reconciler, so that a change made
//! through one replica is acted on at once by the replica that holds the
//! subscription's lease. On SQLite (one process) there is no channel and
//! nothing is relayed. Notices sent while a listener reconnects are lost
//! to it; the periodic resync still reconciles, but a watch may miss a
//! status until the next change.

use minispod_proto::v1 as pb;

use super::{Change, Subscriptions, queries, status_from_db};
use crate::store::{StoreChannel, timestamp};

/// The store channel subscription changes travel on.
const CHANNEL: &str = "minispod_subscriptions";

/// A change other replicas must hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    /// The subscription changed; true when its status or reason did (the
    /// newest stored event goes to watchers with it).
    Upserted(String, bool),
    /// The subscription is gone: (id, owner).
    Deleted(String, String),
}

impl Notice {
    fn of(change: &Change) -> Notice {
        match change {
            Change::Upserted(id, event) => Notice::Upserted(id.clone(), event.is_some()),
            Change::Deleted(id, owner) => Notice::Deleted(id.clone(), owner.clone()),
        }
    }
}

/// `origin|u|id`, `origin|e|id` (with an event) or `origin|d|id|owner`.
fn encode(origin: &str, notice: &Notice) -> String {
    match notice {
        Notice::Upserted(id, false) => format!("{origin}|u|{id}"),
        Notice::Upserted(id, true) => format!("{origin}|e|{id}"),
        Notice::Deleted(id, owner) => format!("{origin}|d|{id}|{owner}"),
    }
}

fn decode(message: &str) -> Option<(&str, Notice)> {
    let mut parts = message.splitn(4, '|');
    let (origin, kind, id) = (parts.next()?, parts.next()?, parts.next()?.to_owned());
    let notice = match kind {
        "u" => Notice::Upserted(id, false),
        "e" => Notice::Upserted(id, true),
        "d" => Notice::Deleted(id, parts.next()?.to_owned()),
        _ => return None,
    };
    Some((origin, notice))
}

impl Subscriptions {
    /// Relays changes to and from the other replicas when the store is
    /// shared (PostgreSQL); nothing on SQLite. The tasks end when aborted.
    pub async fn spawn_relay(&self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let Some(channel) = self.db().open_channel(CHANNEL).await? else {
            return Ok(Vec::new());
        };
        let StoreChannel {
            sender,
            mut receiver,
            flushed,
            listening,
        } = channel;
        *self.inner.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        let me = self.clone();
        let incoming = tokio::spawn(async move {
            let _listening = listening;
            while let Some(message) = receiver.recv().await {
                match decode(&message) {
                    Some((origin, _)) if origin == me.inner.replica_id => {}
                    Some((_, notice)) => me.apply_remote(notice).await,
                    None => tracing::warn!(message, "unreadable subscription change notice"),
                }
            }
        });
        Ok(vec![incoming, flushed])
    }

    /// Sends a change this replica made to the others.
    pub(super) fn relay(&self, change: &Change) {
        if let Some(r) = &*self.inner.relay.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = r.send(encode(&self.inner.replica_id, &Notice::of(change)));
        }
    }

    async fn apply_remote(&self, notice: Notice) {
        match notice {
            Notice::Upserted(id, with_event) => {
                let event = if with_event {
                    match queries::events(self.db(), &id, 1).await {
                        Ok(events) => events.into_iter().next().map(|(status, reason, at)| {
                            pb::SubscriptionEvent {
                                status: status_from_db(&status) as i32,
                                reason,
                                at: Some(timestamp(at)),
                            }
                        }),
                        Err(e) => {
                            tracing::warn!(subscription = %id, error = %e, "could not read the event of another replica's change");
                            None
                        }
                    }
                } else {
                    None
                };
                // The lease holder may be this replica: act on the change
                // now rather than at the next resync.
                self.enqueue([id.clone()]);
                self.publish_here(Change::Upserted(id, event));
            }
            Notice::Deleted(id, owner) => self.publish_here(Change::Deleted(id, owner)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        for notice in [
            Notice::Upserted("s1".into(), false),
            Notice::Upserted("s2".into(), true),
            Notice::Deleted("s3".into(), "u1".into()),
        ] {
            let text = encode("r1", &notice);
            assert_eq!(decode(&text), Some(("r1", notice)));
        }
        assert_eq!(decode("r1|z|s"), None);
        assert_eq!(decode("r1|d|s"), None, "a deletion names the owner");
    }
}
