//! Control-plane processes killed with kill -9: nothing lost under 500
//! agents, and replicas on PostgreSQL taking over each other's workers.

use std::time::{Duration, Instant};

use minispod_agent::tls::Trust;
use minispod_control_plane::config::ServeArgs;
use minispod_proto::v1::{
    self as pb, WorkerStatus, agent_service_client::AgentServiceClient,
    worker_service_client::WorkerServiceClient,
};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_control_plane_under_500_agents_loses_nothing() {
    const N: usize = 500;
    minispod_agent::swarm::raise_fd_limit();
    let dir = TempDir::for_server().await;
    let data = dir.0.join("cp");
    let port = free_port();
    let mut cp = spawn_control_plane_process(&data, dir.1.as_deref(), port);
    let (ch, admin) = admin_channel(port, &data).await;
    let token = WorkerServiceClient::new(ch.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses: 0,
                description: "swarm".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let pem = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();
    let swarm = minispod_agent::swarm::Swarm::start(minispod_agent::swarm::SwarmConfig {
        servers: vec![format!("https://localhost:{port}")],
        token: token.into(),
        trust: Trust::CaPem(pem),
        agents: N,
        first_index: 0,
        state_root: dir.0.join("agents"),
        enroll_concurrency: 32,
        max_backoff: Duration::from_secs(4),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet_counts(&ch, &admin).await.1 < N {
        assert!(Instant::now() < deadline, "not all {N} ACTIVE");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Heavy heartbeat load for a moment, then kill -9 mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reconnects_before = swarm.reconnects();
    cp.start_kill().unwrap(); // SIGKILL
    cp.wait().await.unwrap();
    let killed_at = Instant::now();

    // On SQLite, the file survived the kill intact (PostgreSQL keeps its
    // own integrity: the server was not killed).
    if dir.1.is_none() {
        let db =
            sqlx::SqlitePool::connect(&format!("sqlite:{}", data.join("minispod.db").display()))
                .await
                .unwrap();
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        db.close().await;
    }

    // Restart on the same data dir and port: every agent comes back by itself.
    let _cp = spawn_control_plane_process(&data, dir.1.as_deref(), port);
    let (ch, admin) = admin_channel(port, &data).await;
    let restarted_at = Instant::now();
    let mut first_back = None;
    loop {
        let (total, active) = fleet_counts(&ch, &admin).await;
        assert_eq!(total, N, "no worker lost or duplicated");
        if active > 0 && first_back.is_none() {
            first_back = Some(restarted_at.elapsed());
        }
        if active == N {
            break;
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(60),
            "{active}/{N} ACTIVE after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_back = restarted_at.elapsed();
    println!(
        "kill -9 with {N} agents: down for {:?}; after restart first ACTIVE at {:?}, all {N} ACTIVE at {:?} (reconnects spread by jitter); {} reconnects",
        restarted_at - killed_at,
        first_back.unwrap(),
        all_back,
        swarm.reconnects() - reconnects_before
    );
    assert!(swarm.reconnects() > reconnects_before, "agents reconnected");
    swarm.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_replicas_take_over_the_workers_of_a_replica_killed_with_kill_9() {
    const LEASE: Duration = Duration::from_secs(2);
    // Replica A is a process (to kill -9); B runs here. Both share one
    // database and one data dir (so one CA and one JWT key).
    let dir = replica_database().await;
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn_control_plane_process_with(
        &dir.0,
        dir.1.as_deref(),
        port_a,
        &["--replica-lease", "2s"],
    );
    let (ch_a, admin_a) = admin_channel(port_a, &dir.0).await;
    let b =
        ControlPlane::start_in(dir.clone(), port_b, |args| args.store.replica_lease = LEASE).await;
    let mut watch_b = b.watch().await;
    let token = WorkerServiceClient::new(ch_a.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                ttl_seconds: 3600,
                max_uses: 0,
                description: "replicas".into(),
                ..Default::default()
            },
            &admin_a,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let url_a = format!("https://localhost:{port_a}");
    // One agent knows only A; the other fails over from A to B.
    let (s1, s2) = (TempDir::new(), TempDir::new());
    let _only_a = spawn_agent_to(
        std::slice::from_ref(&url_a),
        &b.ca_hash,
        &s1.0,
        &token,
        &["--machine-id", "replica-test-only-a"],
    );
    let _both = spawn_agent_to(
        &[url_a.clone(), b.url()],
        &b.ca_hash,
        &s2.0,
        &token,
        &["--machine-id", "replica-test-both"],
    );
    // Both enrolled and streaming on A; B's watchers see it (LISTEN/NOTIFY).
    let mut active = std::collections::HashSet::new();
    while active.len() < 2 {
        let (w, _) = watch_b
            .until("both ACTIVE via A", |w| status(w) == WorkerStatus::Active)
            .await;
        active.insert(w.machine_id);
    }
    let listed = b.list().await;
    assert_eq!(listed.len(), 2);
    let only_a = listed
        .iter()
        .find(|w| w.machine_id == "replica-test-only-a")
        .unwrap()
        .clone();

    a.start_kill().unwrap(); // SIGKILL: A cleans nothing up.
    a.wait().await.unwrap();
    let killed_at = now_ms();
    let (gone, seen_at) = watch_b
        .until("the worker only A held goes INACTIVE", |w| {
            w.id == only_a.id && status(w) == WorkerStatus::Inactive
        })
        .await;
    assert!(!gone.online);
    let latency = seen_at - killed_at;
    println!(
        "replica kill -9 to INACTIVE (lease {} ms, seen by a watcher on the other replica): {latency} ms",
        LEASE.as_millis()
    );
    // The lease, plus up to a third of it until the next reaping.
    assert!(
        latency <= (LEASE.as_millis() * 4 / 3 + 500) as i64,
        "took {latency} ms"
    );

    // The other agent reconnected to B by itself and is ACTIVE there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = b.list().await;
        assert_eq!(listed.len(), 2, "no duplicate worker");
        let both = listed
            .iter()
            .find(|w| w.machine_id == "replica-test-both")
            .unwrap();
        if status(both) == WorkerStatus::Active && both.online {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not fail over to B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it stays ACTIVE past another lease: nobody reaps B's stream.
    tokio::time::sleep(LEASE * 2).await;
    let both = b
        .list()
        .await
        .into_iter()
        .find(|w| w.machine_id == "replica-test-both")
        .unwrap();
    assert_eq!(status(&both), WorkerStatus::Active);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_stream_claimed_on_another_replica_closes_the_older_copy() {
    let dir = replica_database().await;
    // A long heartbeat deadline: a stream that ends within seconds was
    // closed by the takeover, not for silence.
    let slow = |args: &mut ServeArgs| args.fleet.heartbeat_interval = Duration::from_secs(60);
    let a = ControlPlane::start_in(dir.clone(), free_port(), slow).await;
    let b = ControlPlane::start_in(dir, free_port(), slow).await;
    let mut watch_a = a.watch().await;
    let (key, csr) = minispod_agent::enroll::key_and_csr("twice").unwrap();
    let enrolled = AgentServiceClient::new(a.channel.clone())
        .enroll(pb::EnrollRequest {
            token: a.token(0).await,
            csr_pem: csr,
            facts: Some(pb::MachineFacts {
                hostname: "twice".into(),
                machine_id: "twice-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let cert = enrolled.certificate_pem;
    let mut on_a = open_stream(mtls_channel(&a, &cert, &key).await.unwrap(), "twice-1")
        .await
        .expect("stream on A");
    watch_a
        .until("ACTIVE on A", |w| status(w) == WorkerStatus::Active)
        .await;

    // The same worker streams on B (say the agent lost its path to A): A
    // closes its copy, and the worker stays online, held by B.
    let on_b = open_stream(mtls_channel(&b, &cert, &key).await.unwrap(), "twice-1")
        .await
        .expect("stream on B");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = on_a.message().await {}
    })
    .await;
    assert!(closed.is_ok(), "A kept its copy of the stream");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let w = &b.list().await[0];
    assert!(
        w.online && status(w) == WorkerStatus::Active,
        "A's closing did not take the worker offline: {w:?}"
    );

    // When B's stream ends (B shuts down), A's watchers see the worker go
    // INACTIVE.
    b.stop().await;
    drop(on_b);
    let (w, _) = watch_a
        .until("INACTIVE after B's stream ended", |w| {
            status(w) == WorkerStatus::Inactive
        })
        .await;
    assert!(!w.online);
}
