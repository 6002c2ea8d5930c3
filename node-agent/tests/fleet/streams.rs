//! An agent's stream: enrolling, going active, heartbeats reaching
//! watchers, and what kill -9, SIGTERM and a control-plane restart do.

use std::time::{Duration, Instant};

use minispod_proto::v1::{self as pb, WorkerStatus};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_enrolls_goes_active_and_kill_9_makes_it_inactive_at_once() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    assert!(w.online && w.ready && w.schedulable);
    assert!(
        !w.name.is_empty() && w.cpu_cores > 0 && w.memory_bytes > 0 && !w.architecture.is_empty()
    );
    assert!(!w.machine_id.is_empty() && !w.os.is_empty() && !w.kernel_version.is_empty());
    assert!(w.certificate_expires_at.is_some());

    // Heartbeats land in the store in batches.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let listed = cp.list().await;
    assert!(
        listed[0].last_heartbeat_at.is_some(),
        "heartbeat metrics were flushed"
    );

    let killed_at = now_ms();
    agent.child.start_kill().unwrap(); // SIGKILL
    let (w2, seen_at) = watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    assert_eq!(w2.id, w.id);
    assert!(!w2.online && !w2.schedulable);
    let latency = seen_at - killed_at;
    println!("kill -9 to INACTIVE (seen by a WatchWorkers subscriber): {latency} ms");
    assert!(latency < 1000, "took {latency} ms");

    // The same machine comes back as the same worker.
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w3, _) = watch
        .until("ACTIVE again", |w| status(w) == WorkerStatus::Active)
        .await;
    assert_eq!(w3.id, w.id);
    assert_eq!(cp.list().await.len(), 1, "no duplicate worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_ask_get_each_workers_heartbeat_figures_once_per_flush() {
    let cp = ControlPlane::start().await;
    let mut plain = cp.watch().await;
    let mut stream = cp
        .workers()
        .watch_workers(cp.authed(pb::WatchWorkersRequest {
            include_metrics: true,
        }))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().unwrap().r#type != pb::WorkerEventType::SnapshotEnd as i32
    {
    }
    let mut watch = Watch { stream };
    let state = TempDir::new();
    let token = cp.token(0).await;
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    // Heartbeats every second, flushed every 200 ms: the figures arrive as
    // METRICS events carrying only the id and the heartbeat fields.
    let mut updates = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while updates.len() < 2 {
            let e = watch.stream.message().await.unwrap().expect("watch ended");
            if e.r#type == pb::WorkerEventType::Metrics as i32 {
                updates.push(e.worker.unwrap());
            }
        }
    })
    .await
    .expect("two METRICS events within 20 s");
    for u in &updates {
        assert_eq!(u.id, w.id);
        assert!(u.memory_used_bytes > 0 && u.last_heartbeat_at.is_some());
        assert!(
            u.name.is_empty() && u.status == 0,
            "a partial worker: {u:?}"
        );
    }
    let at = |u: &pb::Worker| {
        u.last_heartbeat_at.unwrap().seconds * 1000
            + i64::from(u.last_heartbeat_at.unwrap().nanos) / 1_000_000
    };
    assert!(
        at(&updates[1]) > at(&updates[0]),
        "each event is a newer heartbeat"
    );

    // A watcher that did not ask sees only status changes, however many
    // flushes pass.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(e) = tokio::time::timeout_at(until, plain.stream.message()).await {
        let e = e.unwrap().expect("watch ended");
        assert_ne!(
            e.r#type,
            pb::WorkerEventType::Metrics as i32,
            "METRICS without include_metrics"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_stream_and_the_worker_goes_inactive() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let agent = spawn_agent(&cp, &state.0, &cp.token(1).await, &[]);
    watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    let pid = agent.child.id().unwrap().to_string();
    let sent = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    watch
        .until("INACTIVE", |w| status(w) == WorkerStatus::Inactive)
        .await;
    assert!(sent.elapsed() < Duration::from_secs(3));
    let mut child = agent.child;
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reconnect_by_themselves_after_a_control_plane_restart() {
    let cp = ControlPlane::start().await;
    let token = cp.token(0).await;
    let (s1, s2) = (TempDir::new(), TempDir::new());
    let _a1 = spawn_agent(&cp, &s1.0, &token, &[]);
    // A second machine: its own generated machine id.
    std::fs::create_dir_all(&s2.0).unwrap();
    let _a2 = spawn_agent(&cp, &s2.0, &token, &["--machine-id", "second-machine"]);
    let mut watch = cp.watch().await;
    let mut active = std::collections::HashSet::new();
    while active.len() < 2 {
        let (w, _) = watch
            .until("two ACTIVE", |w| status(w) == WorkerStatus::Active)
            .await;
        active.insert(w.id);
    }
    drop(watch);
    let (dir, port) = cp.stop().await;

    let cp = ControlPlane::start_in(dir, port, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = cp.list().await;
        if workers.len() == 2 && workers.iter().all(|w| status(w) == WorkerStatus::Active) {
            let ids: std::collections::HashSet<_> = workers.into_iter().map(|w| w.id).collect();
            assert_eq!(ids, active, "the same workers, no duplicates");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not come back: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
