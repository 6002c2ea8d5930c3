//! Control-plane replicas: the lease under which this process holds its
//! agents' streams, and the relay that tells other replicas of fleet changes.
//!
//! Each replica has a row in `replicas` with a lease it renews every third
//! of the lease time; a worker's record names the replica and the stream
//! that hold it. Every renewal also reaps: workers marked online whose
//! replica's lease lapsed go offline, so when a replica dies its workers go
//! INACTIVE within one lease (plus a third), and their agents reconnect to a
//! live replica. A replica that cannot renew in time (it lost the database)
//! drops its streams itself before the others reap them, so two replicas
//! never both serve one worker's stream; when another replica claims a
//! worker's stream, the relay tells the old holder to close its copy.
//!
//! On a store only this process opens (SQLite), the lease is still kept
//! and joining forgets every other replica: whatever a crash left online is
//! offline at once.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use minispod_proto::v1 as pb;
use prost::Message;
use tokio::task::JoinHandle;

use super::{
    hub::{FleetHub, Notice},
    queries as workers_db,
};
use crate::{
    error::AppResult,
    store::{StoreChannel, now_ms},
};

/// The store channel fleet changes travel on.
const CHANNEL: &str = "minispod_fleet";

/// This process's membership among the replicas.
#[derive(Debug)]
pub struct Replica {
    hub: FleetHub,
    lease: Duration,
}

impl Replica {
    /// Registers this replica under a lease of `lease` and takes offline
    /// every worker no live replica holds. Returns how many went offline.
    pub async fn join(hub: &FleetHub, lease: Duration) -> AppResult<(Replica, usize)> {
        let lease = lease.max(Duration::from_millis(300));
        let now = now_ms();
        let mut tx = hub.db().begin().await?;
        workers_db::remove_replicas(&mut tx, hub.replica_id(), hub.db().single_process(), now)
            .await?;
        workers_db::insert_replica(&mut tx, hub.replica_id(), now + millis(lease)).await?;
        let reaped = workers_db::reap_orphaned_streams(&mut tx, now).await?;
        tx.commit().await?;
        for row in &reaped {
            hub.publish(row);
        }
        let replica = Replica {
            hub: hub.clone(),
            lease,
        };
        Ok((replica, reaped.len()))
    }

    /// Starts relaying fleet changes to and from the other replicas (when
    /// the store is shared) and keeping the lease.
    pub async fn spawn(&self) -> anyhow::Result<ReplicaTasks> {
        let mut tasks = ReplicaTasks {
            lease: tokio::spawn(keep_lease(self.hub.clone(), self.lease)),
            relay: None,
        };
        let Some(channel) = self.hub.db().open_channel(CHANNEL).await? else {
            return Ok(tasks);
        };
        let StoreChannel {
            sender,
            mut receiver,
            flushed,
            listening,
        } = channel;
        let (notices, mut outgoing) = tokio::sync::mpsc::unbounded_channel();
        self.hub.set_relay(notices);
        let me = self.hub.replica_id().to_owned();
        let outgoing = tokio::spawn(async move {
            while let Some(notice) = outgoing.recv().await {
                let _ = sender.send(encode(&me, &notice));
            }
        });
        let hub = self.hub.clone();
        let incoming = tokio::spawn(async move {
            let _listening = listening;
            while let Some(message) = receiver.recv().await {
                match decode(&message) {
                    Some((origin, _)) if origin == hub.replica_id() => {}
                    Some((_, notice)) => {
                        if let Err(e) = hub.apply_remote(notice).await {
                            tracing::warn!(error = %e, "could not apply another replica's change");
                        }
                    }
                    None => tracing::warn!(message, "unreadable fleet change notice"),
                }
            }
        });
        tasks.relay = Some(RelayTasks {
            outgoing,
            flushed,
            incoming,
        });
        Ok(tasks)
    }

    /// Leaves the replicas (clean shutdown, after the streams ended).
    pub async fn leave(self) -> AppResult<()> {
        let mut tx = self.hub.db().begin().await?;
        workers_db::delete_replica(&mut tx, self.hub.replica_id()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The tasks of [`Replica::spawn`].
#[derive(Debug)]
pub struct ReplicaTasks {
    lease: JoinHandle<()>,
    relay: Option<RelayTasks>,
}

#[derive(Debug)]
struct RelayTasks {
    outgoing: JoinHandle<()>,
    flushed: JoinHandle<()>,
    incoming: JoinHandle<()>,
}

impl ReplicaTasks {
    /// Stops keeping the lease and listening, and sends the other replicas
    /// what is still queued for them (the last streams' goodbyes), waiting
    /// up to `timeout`.
    pub async fn stop(self, hub: &FleetHub, timeout: Duration) {
        self.lease.abort();
        let Some(relay) = self.relay else { return };
        relay.incoming.abort();
        hub.clear_relay();
        let _ = tokio::time::timeout(timeout, async {
            let _ = relay.outgoing.await;
            let _ = relay.flushed.await;
        })
        .await;
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Renews the lease every third of it and reaps the workers of dead
/// replicas. When the lease cannot be renewed before two thirds of it have
/// passed, or the others already reaped this replica, every local stream is
/// dropped (the agents reconnect, here or elsewhere) and the replica joins
/// again.
async fn keep_lease(hub: FleetHub, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed_at = Instant::now();
    loop {
        tick.tick().await;
        match renew_and_reap(&hub, lease).await {
            Ok(true) => renewed_at = Instant::now(),
            Ok(false) => {
                tracing::warn!(
                    "this replica's lease lapsed and its workers were reaped; dropping its streams"
                );
                hub.drop_all_streams();
                if let Err(e) = rejoin(&hub, lease).await {
                    tracing::warn!(error = %e, "could not rejoin the replicas");
                } else {
                    renewed_at = Instant::now();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew this replica's lease");
                if renewed_at.elapsed() > lease * 2 / 3 && hub.online_count() > 0 {
                    tracing::warn!("lease about to lapse; dropping every stream held here");
                    hub.drop_all_streams();
                }
            }
        }
    }
}

async fn renew_and_reap(hub: &FleetHub, lease: Duration) -> AppResult<bool> {
    let now = now_ms();
    let mut tx = hub.db().begin().await?;
    if !workers_db::renew_replica(&mut tx, hub.replica_id(), now + millis(lease)).await? {
        return Ok(false);
    }
    let reaped = workers_db::reap_orphaned_streams(&mut tx, now).await?;
    workers_db::remove_replicas(&mut tx, hub.replica_id(), false, now).await?;
    if reaped.is_empty() {
        tx.commit_no_listing_change().await?;
    } else {
        tx.commit().await?;
        tracing::info!(
            workers = reaped.len(),
            "workers of a replica whose lease lapsed are offline"
        );
    }
    for row in &reaped {
        hub.publish(row);
    }
    Ok(true)
}

async fn rejoin(hub: &FleetHub, lease: Duration) -> AppResult<()> {
    let mut tx = hub.db().begin().await?;
    workers_db::insert_replica(&mut tx, hub.replica_id(), now_ms() + millis(lease)).await?;
    tx.commit().await?;
    Ok(())
}

/// `origin|kind|worker[|command]`.
fn encode(origin: &str, notice: &Notice) -> String {
    match notice {
        Notice::Upserted(id) => format!("{origin}|u|{id}"),
        Notice::Deleted(id) => format!("{origin}|d|{id}"),
        Notice::Disconnect(id) => format!("{origin}|x|{id}"),
        Notice::Command(id, command) => {
            let bytes = pb::Command {
                command: Some(*command),
            }
            .encode_to_vec();
            format!("{origin}|c|{id}|{}", STANDARD_NO_PAD.encode(bytes))
        }
    }
}

fn decode(message: &str) -> Option<(&str, Notice)> {
    let mut parts = message.splitn(4, '|');
    let (origin, kind, id) = (parts.next()?, parts.next()?, parts.next()?.to_owned());
    let notice = match kind {
        "u" => Notice::Upserted(id),
        "d" => Notice::Deleted(id),
        "x" => Notice::Disconnect(id),
        "c" => {
            let bytes = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
            Notice::Command(id, pb::Command::decode(bytes.as_slice()).ok()?.command?)
        }
        _ => return None,
    };
    Some((origin, notice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        for notice in [
            Notice::Upserted("w1".into()),
            Notice::Deleted("w2".into()),
            Notice::Disconnect("w3".into()),
            Notice::Command("w4".into(), pb::command::Command::RenewCertificate(true)),
        ] {
            let text = encode("r1", &notice);
            assert_eq!(decode(&text), Some(("r1", notice)));
        }
        assert_eq!(decode("r1|z|w"), None);
        assert_eq!(decode("r1|c|w|!!"), None);
    }
}
