//! The fleet hub: which worker has a live stream, who watches the fleet, and
//! the heartbeat metrics waiting to be written.
//!
//! Status changes are written by the caller at once and then published here;
//! heartbeat metrics only land in `pending` and reach the store in one
//! transaction per flush interval, so thousands of agents cost one write
//! every few seconds, not thousands a second.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use minispod_proto::v1 as pb;
use tokio::sync::{Notify, broadcast, mpsc};

use super::queries::{self as workers_db, HeartbeatMetrics, WorkerRow};
use crate::{
    error::AppResult,
    metrics::Metrics,
    store::{Db, now_ms},
};

/// Timing of the fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// A stream that sends nothing for this many intervals is closed.
    pub missed_heartbeats: u32,
    /// How often pending heartbeat metrics are written.
    pub metrics_flush_interval: Duration,
}

impl FleetConfig {
    /// How long a stream may stay silent before it is presumed dead.
    pub fn silence_deadline(&self) -> Duration {
        self.heartbeat_interval * self.missed_heartbeats.max(1)
    }
}

/// A K3s join token being made ([`ShowNode::k3s_join_token`]).
pub type JoinToken<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = anyhow::Result<Option<minispod_support::secret::Secret>>>
            + Send
            + 'a,
    >,
>;

/// What the cluster adds to the workers (`crate::nodes` implements it,
/// startup sets it on the hub): the workers know of no cluster.
pub trait ShowNode: Send + Sync + std::fmt::Debug {
    /// Adds what the cluster says of the worker's node, and its drain, to
    /// `w`; leaves it as it is without a link or a node.
    fn decorate(&self, w: &mut pb::Worker);
    /// A join token of this worker's own, valid `ttl`; None when the
    /// cluster makes none.
    fn k3s_join_token<'a>(&'a self, worker_id: &'a str, ttl: Duration) -> JoinToken<'a>;
    /// Whether a cluster is configured.
    fn is_linked(&self) -> bool;
}

/// A change of the fleet, as watchers see it.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// A worker was created or changed; its state after the change.
    Upserted(Box<pb::Worker>),
    /// A worker was deleted.
    Deleted(String),
    /// Heartbeat figures a metrics flush wrote: one entry per worker per
    /// flush, published only while someone watches.
    Metrics(Arc<[(String, HeartbeatMetrics)]>),
}

/// An event and when it was observed (Unix ms).
pub type TimedEvent = (WorkerEvent, i64);

/// The handle of one live stream.
#[derive(Debug)]
struct Session {
    id: u64,
    stream_id: String,
    /// Set once the store names this stream as the worker's.
    claimed: bool,
    mailbox: Arc<Mailbox>,
}

/// What a new stream needs from the hub.
#[derive(Debug)]
pub struct Registration {
    /// This session's number; only the current session may mark the worker offline.
    pub session_id: u64,
    /// The stream's name in the store, unique across replicas.
    pub stream_id: String,
    /// Tells the stream to stop (another stream replaced it, the worker was
    /// deleted) or to pass administrators' commands to the agent.
    pub mailbox: Arc<Mailbox>,
}

/// Most commands a stream's mailbox holds before refusing more.
const MAILBOX_COMMANDS: usize = 8;

/// What the rest of the control plane tells one live stream. A mutex and a
/// `Notify` rather than a channel: a tokio channel allocates a 32-slot block
/// up front, and there is one mailbox per connected agent.
#[derive(Debug, Default)]
pub struct Mailbox {
    wake: Notify,
    state: Mutex<MailboxState>,
}

#[derive(Debug, Default)]
struct MailboxState {
    stopped: bool,
    commands: Vec<pb::command::Command>,
}

/// What a worker's mailbox hands its stream: an order for the agent.
#[derive(Debug, PartialEq)]
pub enum AgentOrder {
    /// End the stream.
    Stop,
    /// Commands for the agent, oldest first.
    Commands(Vec<pb::command::Command>),
}

impl Mailbox {
    fn state(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the stream to end.
    pub fn stop(&self) {
        self.state().stopped = true;
        self.wake.notify_one();
    }

    /// Queues a command; false when the mailbox is full or stopped.
    pub fn post(&self, command: pb::command::Command) -> bool {
        let mut state = self.state();
        if state.stopped || state.commands.len() >= MAILBOX_COMMANDS {
            return false;
        }
        state.commands.push(command);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// The next mail; waits for one. Cancel-safe: mail is taken only when
    /// returned.
    pub async fn next(&self) -> AgentOrder {
        loop {
            {
                let mut state = self.state();
                if state.stopped {
                    return AgentOrder::Stop;
                }
                if !state.commands.is_empty() {
                    return AgentOrder::Commands(std::mem::take(&mut state.commands));
                }
            }
            // A wake-up between the check and here is kept as a permit.
            self.wake.notified().await;
        }
    }
}

/// A fleet change other replicas must hear of (PostgreSQL: NOTIFY).
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The worker's record changed: reload it and tell local watchers.
    Upserted(String),
    /// The worker was deleted: tell watchers, close its stream.
    Deleted(String),
    /// The worker's certificate was replaced: close its stream.
    Disconnect(String),
    /// A command for the worker's stream, wherever it is held.
    Command(String, pb::command::Command),
}

#[derive(Debug)]
struct Inner {
    db: Db,
    replica_id: String,
    relay: Mutex<Option<mpsc::UnboundedSender<Notice>>>,
    config: FleetConfig,
    sessions: Mutex<HashMap<String, Session>>,
    next_session: AtomicU64,
    events: broadcast::Sender<TimedEvent>,
    pending: Mutex<HashMap<String, HeartbeatMetrics>>,
    closing: tokio::sync::watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// What the cluster adds to a worker, once startup set it.
    nodes: std::sync::OnceLock<Arc<dyn ShowNode>>,
    /// What watchers were last told of each worker; see [`Published`].
    published: Mutex<Published>,
}

/// The version of each worker watchers were last shown, and the workers
/// deleted lately. A row read before a write and published after it (the
/// node reconciler reads a worker, the agent's hello commits, the
/// reconciler shows the node it read) would leave watchers on a state the
/// store no longer has; checked and sent under one lock, the events of a
/// worker go out in version order and never older than the last one sent,
/// nor after its deletion.
#[derive(Debug, Default)]
struct Published {
    versions: HashMap<String, i64>,
    deleted: HashMap<String, std::time::Instant>,
}

/// How long a deleted worker's late publications are still refused.
const DELETED_KEPT: Duration = Duration::from_secs(300);

/// Shared state of the fleet; cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetHub {
    inner: Arc<Inner>,
}

impl FleetHub {
    /// A hub over `db`.
    pub fn new(db: Db, config: FleetConfig, metrics: Arc<Metrics>) -> FleetHub {
        let (events, _) = broadcast::channel(4096);
        FleetHub {
            inner: Arc::new(Inner {
                db,
                replica_id: crate::store::new_id(),
                relay: Mutex::new(None),
                config,
                sessions: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(1),
                events,
                pending: Mutex::new(HashMap::new()),
                closing: tokio::sync::watch::Sender::new(false),
                metrics,
                nodes: std::sync::OnceLock::new(),
                published: Mutex::new(Published::default()),
            }),
        }
    }

    /// Workers shown from now on carry what `nodes` says of their nodes.
    pub fn set_nodes(&self, nodes: Arc<dyn ShowNode>) {
        let _ = self.inner.nodes.set(nodes);
    }

    /// What the cluster adds to a worker, when startup set it.
    pub fn nodes(&self) -> Option<&dyn ShowNode> {
        self.inner.nodes.get().map(|n| &**n)
    }

    /// A worker as the API shows it: its record, and what the cluster
    /// says of its node.
    pub fn worker(&self, row: &WorkerRow) -> pb::Worker {
        let mut w = pb::Worker::from(row);
        if let Some(n) = self.nodes() {
            n.decorate(&mut w);
        }
        w
    }

    /// The store.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// This process's name among the control-plane replicas.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// From now on, changes are also sent to other replicas through `relay`.
    pub fn set_relay(&self, relay: mpsc::UnboundedSender<Notice>) {
        *self.inner.relay.lock().unwrap_or_else(|p| p.into_inner()) = Some(relay);
    }

    /// Stops sending changes to other replicas (shutdown).
    pub fn clear_relay(&self) {
        *self.inner.relay.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn relay(&self, notice: Notice) {
        if let Some(r) = &*self.inner.relay.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = r.send(notice);
        }
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The fleet's timing.
    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new stream for `worker_id`; an older one is told to stop
    /// (one live stream per worker: the newest wins).
    pub fn register(&self, worker_id: &str) -> Registration {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let stream_id = format!("{}/{id}", self.inner.replica_id);
        let mailbox = Arc::new(Mailbox::default());
        let old = self.sessions().insert(
            worker_id.to_owned(),
            Session {
                id,
                stream_id: stream_id.clone(),
                claimed: false,
                mailbox: mailbox.clone(),
            },
        );
        if let Some(old) = old {
            old.mailbox.stop();
        }
        Registration {
            session_id: id,
            stream_id,
            mailbox,
        }
    }

    /// Records that the store now names session `session_id` as the
    /// worker's stream (its claim committed).
    pub fn mark_claimed(&self, worker_id: &str, session_id: u64) {
        if let Some(s) = self.sessions().get_mut(worker_id)
            && s.id == session_id
        {
            s.claimed = true;
        }
    }

    /// The stream of `worker_id` held here whose claim has committed.
    fn claimed_stream(&self, worker_id: &str) -> Option<String> {
        self.sessions()
            .get(worker_id)
            .filter(|s| s.claimed)
            .map(|s| s.stream_id.clone())
    }

    /// Closes the local stream of `worker_id` if it is `stream_id`, without
    /// marking the worker offline: another replica holds its newer stream.
    fn drop_superseded(&self, worker_id: &str, stream_id: &str) {
        let mut sessions = self.sessions();
        if sessions
            .get(worker_id)
            .is_some_and(|s| s.stream_id == stream_id)
            && let Some(s) = sessions.remove(worker_id)
        {
            s.mailbox.stop();
        }
    }

    /// Ends every local stream at once, without marking workers offline:
    /// this replica lost its lease, so others may already hold them.
    pub fn drop_all_streams(&self) {
        for (_, s) in self.sessions().drain() {
            s.mailbox.stop();
        }
    }

    /// Removes session `session_id` of `worker_id` if it is still the
    /// current one; true when it was (and the worker is now offline).
    pub fn unregister(&self, worker_id: &str, session_id: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions.get(worker_id).is_some_and(|s| s.id == session_id) {
            sessions.remove(worker_id);
            true
        } else {
            false
        }
    }

    /// Closes the worker's stream, on whichever replica holds it, without
    /// marking it offline (the caller deleted it or replaced its certificate).
    pub fn disconnect(&self, worker_id: &str) {
        self.disconnect_here(worker_id);
        self.relay(Notice::Disconnect(worker_id.to_owned()));
    }

    fn disconnect_here(&self, worker_id: &str) {
        if let Some(s) = self.sessions().remove(worker_id) {
            s.mailbox.stop();
        }
        self.pending().remove(worker_id);
    }

    /// Sends a command down the worker's stream, on whichever replica holds
    /// it; false when it is not held here (it is then relayed).
    pub fn send_command(&self, worker_id: &str, command: pb::command::Command) -> bool {
        if self.send_command_here(worker_id, command) {
            return true;
        }
        self.relay(Notice::Command(worker_id.to_owned(), command));
        false
    }

    fn send_command_here(&self, worker_id: &str, command: pb::command::Command) -> bool {
        self.sessions()
            .get(worker_id)
            .is_some_and(|s| s.mailbox.post(command))
    }

    /// Applies a change another replica made: watchers here hear of it, and a
    /// local stream another replica took over is closed.
    pub async fn apply_remote(&self, notice: Notice) -> AppResult<()> {
        match notice {
            Notice::Upserted(id) => {
                // Read which stream is ours before reading the record, so a
                // record read before our own claim committed cannot close
                // our new stream.
                let ours = self.claimed_stream(&id);
                let Some(row) = workers_db::by_id(self.db().read(), &id).await? else {
                    return Ok(());
                };
                if let Some(ours) = ours
                    && row.stream_id.as_deref() != Some(ours.as_str())
                {
                    self.drop_superseded(&id, &ours);
                }
                self.publish_here(&row);
            }
            Notice::Deleted(id) => {
                self.disconnect_here(&id);
                self.publish_deleted_here(&id);
            }
            Notice::Disconnect(id) => self.disconnect_here(&id),
            Notice::Command(id, command) => {
                self.send_command_here(&id, command);
            }
        }
        Ok(())
    }

    /// Server shutdown: ends every stream (their workers go offline) and
    /// every watch, so the server can drain its connections.
    pub fn close_all(&self) {
        self.inner.closing.send_replace(true);
        for s in self.sessions().values() {
            s.mailbox.stop();
        }
    }

    /// Resolves once `close_all` was called.
    pub async fn closed(&self) {
        let mut rx = self.inner.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Number of live streams.
    pub fn online_count(&self) -> usize {
        self.sessions().len()
    }

    /// Tells watchers, here and on every replica, about a worker's new state.
    pub fn publish(&self, row: &WorkerRow) {
        self.publish_here(row);
        self.relay(Notice::Upserted(row.id.clone()));
    }

    /// Tells this replica's watchers only: for changes every replica sees
    /// by itself (the cluster link's view of a node).
    ///
    /// A row older than one already shown (a lower `version`), or of a
    /// worker deleted since, is not shown: watchers keep the newer state.
    pub fn publish_here(&self, row: &WorkerRow) {
        let worker = Box::new(self.worker(row));
        let mut published = self.published();
        if published.deleted.contains_key(&row.id) {
            tracing::debug!(worker_id = %row.id, "not shown: deleted since it was read");
            return;
        }
        match published.versions.get_mut(&row.id) {
            Some(v) if *v > row.version => {
                tracing::debug!(worker_id = %row.id, read = row.version, shown = *v,
                    "not shown: watchers have a newer state");
                return;
            }
            Some(v) => *v = row.version,
            None => {
                published.versions.insert(row.id.clone(), row.version);
            }
        }
        let _ = self
            .inner
            .events
            .send((WorkerEvent::Upserted(worker), now_ms()));
    }

    fn published(&self) -> std::sync::MutexGuard<'_, Published> {
        self.inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Tells watchers, here and on every replica, a worker is gone.
    pub fn publish_deleted(&self, worker_id: &str) {
        self.publish_deleted_here(worker_id);
        self.relay(Notice::Deleted(worker_id.to_owned()));
    }

    fn publish_deleted_here(&self, worker_id: &str) {
        let mut published = self.published();
        published.versions.remove(worker_id);
        let now = std::time::Instant::now();
        published
            .deleted
            .retain(|_, at| now.duration_since(*at) < DELETED_KEPT);
        published.deleted.insert(worker_id.to_owned(), now);
        let _ = self
            .inner
            .events
            .send((WorkerEvent::Deleted(worker_id.to_owned()), now_ms()));
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TimedEvent> {
        self.inner.events.subscribe()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeartbeatMetrics>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a heartbeat's metrics for the next flush (the newest wins).
    pub fn record_heartbeat(&self, worker_id: &str, metrics: HeartbeatMetrics) {
        self.pending().insert(worker_id.to_owned(), metrics);
        self.inner
            .metrics
            .heartbeats
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Writes every pending heartbeat in one transaction; returns how many.
    pub async fn flush_metrics(&self) -> AppResult<usize> {
        let batch: Vec<(String, HeartbeatMetrics)> = self.pending().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        let started = std::time::Instant::now();
        let mut tx = self.inner.db.begin().await?;
        workers_db::write_metrics(&mut tx, &batch).await?;
        tx.commit_no_listing_change().await?;
        self.inner.metrics.observe_flush(n, started.elapsed());
        // Live views get the figures once per flush, coalesced per worker:
        // one broadcast entry for the whole batch, nothing when unwatched.
        if self.inner.events.receiver_count() > 0 {
            let _ = self
                .inner
                .events
                .send((WorkerEvent::Metrics(batch.into()), now_ms()));
        }
        Ok(n)
    }

    /// Flushes metrics every flush interval until the hub is dropped.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.config.metrics_flush_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let hub = FleetHub { inner };
                match hub.flush_metrics().await {
                    Ok(n) if n > 0 => tracing::debug!(workers = n, "heartbeat metrics written"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "heartbeat metrics flush failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_mailbox_wakes_its_stream_and_delivers_commands_in_order_then_stop() {
        let m = Arc::new(Mailbox::default());
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(m.post(pb::command::Command::RenewCertificate(true)));
        let first = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("a waiting stream is woken by a command")
            .unwrap();
        assert_eq!(
            first,
            AgentOrder::Commands(vec![pb::command::Command::RenewCertificate(true)])
        );

        assert!(m.post(pb::command::Command::HeartbeatIntervalSeconds(7)));
        assert!(m.post(pb::command::Command::Reenroll(true)));
        let next = tokio::time::timeout(Duration::from_secs(1), m.next())
            .await
            .expect("queued commands are ready");
        assert_eq!(
            next,
            AgentOrder::Commands(vec![
                pb::command::Command::HeartbeatIntervalSeconds(7),
                pb::command::Command::Reenroll(true)
            ])
        );

        m.stop();
        let stopped = tokio::time::timeout(Duration::from_secs(1), m.next())
            .await
            .expect("a stopped mailbox answers at once");
        assert_eq!(stopped, AgentOrder::Stop);
        assert!(
            !m.post(pb::command::Command::RenewCertificate(true)),
            "stopped"
        );
    }

    /// The node reconciler's race (a watcher left NOT_READY while the store
    /// said ACTIVE), driven step by step: the reconciler reads a worker,
    /// the agent's hello commits and is published, then the reconciler
    /// shows its node with the row it read.
    #[tokio::test]
    async fn a_row_read_before_a_write_and_shown_after_it_never_reaches_watchers() {
        let dir = std::env::temp_dir().join(format!("minispod-hub-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::connect(None, &dir, &Default::default()).await.unwrap();
        let hub = FleetHub::new(
            db.clone(),
            FleetConfig {
                heartbeat_interval: Duration::from_secs(5),
                missed_heartbeats: 3,
                metrics_flush_interval: Duration::from_secs(5),
            },
            Arc::default(),
        );
        let mut tx = db.begin().await.unwrap();
        let facts = pb::MachineFacts {
            hostname: "h1".into(),
            machine_id: "m1".into(),
            ..Default::default()
        };
        workers_db::insert(&mut tx, "w1", &facts, "serial", i64::MAX / 2)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut events = hub.subscribe();

        let read_early = workers_db::by_id(db.read(), "w1").await.unwrap().unwrap();
        let online = super::super::session::change_state(
            &hub,
            "w1",
            workers_db::StateChange {
                online: Some(true),
                ready: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(online.status, "ACTIVE");
        hub.publish_here(&read_early);
        // The node's figures changed again: the current row is shown.
        hub.publish_here(&online);

        let mut shown = Vec::new();
        while let Ok((event, _)) = events.try_recv() {
            if let WorkerEvent::Upserted(w) = event {
                shown.push(pb::WorkerStatus::try_from(w.status).unwrap());
            }
        }
        let stored = workers_db::by_id(db.read(), "w1").await.unwrap().unwrap();
        assert_eq!(stored.status, "ACTIVE");
        assert_eq!(
            shown,
            [pb::WorkerStatus::Active, pb::WorkerStatus::Active],
            "the row read before the hello is never shown after it"
        );

        // Nor does a row read before a deletion bring the worker back.
        hub.publish_deleted("w1");
        hub.publish_here(&online);
        let mut after = Vec::new();
        while let Ok((event, _)) = events.try_recv() {
            after.push(matches!(event, WorkerEvent::Deleted(_)));
        }
        assert_eq!(after, [true], "only the deletion");
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_commands() {
        let m = Mailbox::default();
        for _ in 0..MAILBOX_COMMANDS {
            assert!(m.post(pb::command::Command::RenewCertificate(true)));
        }
        assert!(!m.post(pb::command::Command::RenewCertificate(true)));
        assert!(matches!(m.next().await, AgentOrder::Commands(c) if c.len() == MAILBOX_COMMANDS));
    }
}
