//! Metric history (issue #23): heartbeats of a real mTLS agent stream come
//! back from GetWorkerHistory and GetFleetHistory averaged per step, at the
//! fine and the coarse resolution, old points are pruned, and the
//! questions are checked (ranges, steps, who may ask).

use std::time::Duration;

use minispod_control_plane::store::{Db, now_ms};
use minispod_proto::v1::{
    self as pb, agent_service_client::AgentServiceClient,
    history_service_client::HistoryServiceClient, worker_service_client::WorkerServiceClient,
};
use tokio::sync::mpsc;
use tonic::Code;

use crate::{
    helpers::{TestApp, authed, expect_code, spawn_app_with, violated_fields},
    subscriptions::{
        create, customer, linked_app_with, namespace_of, status_until, until, worker_with_node_on,
    },
    workers::{Admin, enroll, mtls},
};

fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("a time");
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

/// An agent's stream sending heartbeats with figures.
pub(crate) struct Beating {
    tx: mpsc::Sender<pb::ConnectRequest>,
    rx: tonic::Streaming<pb::ConnectResponse>,
    sequence: u64,
}

impl Beating {
    pub(crate) async fn open(app: &TestApp, token: &str, machine_id: &str) -> (String, Beating) {
        let agent = enroll(app, token, machine_id).await.unwrap();
        let channel = mtls(app, &agent).await;
        let (tx, rx) = mpsc::channel(8);
        tx.send(pb::ConnectRequest {
            message: Some(pb::connect_request::Message::Hello(pb::Hello {
                facts: Some(pb::MachineFacts {
                    hostname: format!("host-{machine_id}"),
                    machine_id: machine_id.into(),
                    ..Default::default()
                }),
                ready: true,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let mut rx = AgentServiceClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        rx.message().await.unwrap().expect("a welcome");
        let id = agent.enrolled.worker_id.clone();
        (
            id,
            Beating {
                tx,
                rx,
                sequence: 0,
            },
        )
    }

    /// One heartbeat with CPU `cpu` % and `mem` bytes in use, acknowledged.
    async fn beat(&mut self, cpu: f64, mem: i64) {
        self.sequence += 1;
        self.tx
            .send(pb::ConnectRequest {
                message: Some(pb::connect_request::Message::Heartbeat(pb::Heartbeat {
                    sequence: self.sequence,
                    cpu_used_percent: cpu,
                    memory_used_bytes: mem,
                    storage_used_bytes: 5 << 30,
                    ready: true,
                    allocatable: Some(pb::WorkerResources {
                        cpu_millicores: 2000,
                        memory_bytes: 8 << 30,
                        storage_bytes: 100 << 30,
                        pods: 110,
                    }),
                    ..Default::default()
                })),
            })
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("an ack within 5 s")
                .unwrap()
                .expect("a message");
            if let Some(pb::connect_response::Message::Ack(a)) = msg.message
                && a.sequence == self.sequence
            {
                return;
            }
        }
    }

    /// Heartbeats every 100 ms for `for_ms`.
    pub(crate) async fn beat_for(&mut self, for_ms: u64, cpu: f64, mem: i64) {
        let until = tokio::time::Instant::now() + Duration::from_millis(for_ms);
        while tokio::time::Instant::now() < until {
            self.beat(cpu, mem).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn token(app: &TestApp, admin: &str) -> String {
    WorkerServiceClient::new(app.channel.clone())
        .create_enrollment_token(authed(
            pb::CreateEnrollmentTokenRequest {
                max_uses: 10,
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .token
}

/// A control plane whose history steps are seconds: 1 s fine points kept
/// 10 s, 3 s coarse points kept 60 s, metrics flushed every 200 ms.
async fn fast_history_app() -> TestApp {
    spawn_app_with(|a| {
        a.fleet.metrics_flush_interval = Duration::from_millis(200);
        a.history.history_fine_step = Duration::from_secs(1);
        a.history.history_fine_retention = Duration::from_secs(10);
        a.history.history_coarse_step = Duration::from_secs(3);
        a.history.history_coarse_retention = Duration::from_secs(60);
    })
    .await
}

#[tokio::test]
async fn heartbeats_come_back_averaged_per_step_then_fine_points_are_pruned_and_coarse_ones_stay() {
    let app = fast_history_app().await;
    let admin = app.admin_token().await;
    let token = token(&app, &admin).await;
    let (id, mut agent) = Beating::open(&app, &token, "history-a").await;
    let (_, mut other) = Beating::open(&app, &token, "history-b").await;
    let mut history = HistoryServiceClient::new(app.channel.clone());

    let started = now_ms();
    // Two seconds at 20 %, two at 60 %; the other worker at 10 % meanwhile.
    let both = async {
        tokio::join!(
            async {
                agent.beat_for(2200, 20.0, 1 << 30).await;
                agent.beat_for(2200, 60.0, 3 << 30).await;
            },
            other.beat_for(4400, 10.0, 1 << 30)
        )
    };
    both.await;
    let stopped = now_ms();
    // The last fine step is written once the grace (flush + 1 s) passed.
    tokio::time::sleep(Duration::from_millis(2600)).await;

    let answer = history
        .get_worker_history(authed(
            pb::GetWorkerHistoryRequest {
                worker_id: id.clone(),
                range: secs(10),
                step: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let window = answer.window.unwrap();
    assert_eq!(window.step, secs(1), "10 s fit in the fine retention");
    assert_eq!(window.resolution, secs(1));
    let points = answer.points;
    assert!(points.len() >= 3, "{points:?}");
    for p in &points {
        let at = ms(&p.at);
        assert_eq!(at % 1000, 0, "steps line up: {p:?}");
        assert!(at >= started - 1000 && at <= stopped, "{p:?}");
        // At most one figure per metrics flush (every 200 ms), never one
        // per heartbeat (every ~100 ms): the store sees flushes only.
        assert!(p.samples >= 1 && p.samples <= 7, "{p:?}");
        assert!(p.cpu_used_percent >= 20.0 - 1e-9 && p.cpu_used_percent <= 60.0 + 1e-9);
        assert_eq!(p.memory_allocatable_bytes, (8u64 << 30) as f64);
        assert_eq!(p.storage_used_bytes, (5u64 << 30) as f64);
    }
    let cpu: Vec<f64> = points.iter().map(|p| p.cpu_used_percent).collect();
    assert!(cpu.contains(&20.0), "a whole step at 20 %: {cpu:?}");
    assert!(cpu.contains(&60.0), "a whole step at 60 %: {cpu:?}");
    assert_eq!(
        points
            .iter()
            .find(|p| p.cpu_used_percent == 60.0)
            .unwrap()
            .memory_used_bytes,
        (3u64 << 30) as f64
    );

    // Downsampled by the server: 2 s steps sum the fine points' figures.
    let wide = history
        .get_worker_history(authed(
            pb::GetWorkerHistoryRequest {
                worker_id: id.clone(),
                range: secs(10),
                step: secs(2),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wide.window.unwrap().step, secs(2));
    for p in &wide.points {
        let at = ms(&p.at);
        assert_eq!(at % 2000, 0);
        let fine: i64 = points
            .iter()
            .filter(|f| (at..at + 2000).contains(&ms(&f.at)))
            .map(|f| f.samples)
            .sum();
        if at >= ms(&points[0].at) {
            assert_eq!(
                p.samples, fine,
                "the 2 s point at {at} sums its fine points"
            );
        }
    }

    // The fleet: both workers counted, their mean CPU.
    let fleet = history
        .get_fleet_history(authed(
            pb::GetFleetHistoryRequest {
                range: secs(10),
                step: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .points;
    assert!(
        fleet.iter().any(|p| p.workers == 2.0
            && (p.cpu_used_percent - 15.0).abs() < 1e-9
            && p.memory_used_bytes == (2u64 << 30) as f64),
        "{fleet:?}"
    );

    // Past the fine retention the fine points are pruned; the coarse
    // ones (3 s, kept 60 s) still answer a longer range.
    tokio::time::sleep(Duration::from_millis(9500)).await;
    let db = Db::connect(
        app.data_dir.1.as_deref(),
        &app.data_dir.0,
        &Default::default(),
    )
    .await
    .unwrap();
    let count = |step: i64| {
        let db = db.clone();
        async move {
            let read = async {
                Ok::<i64, sqlx::Error>(minispod_control_plane::with_conn!(db.read(), |c| {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM worker_history WHERE step_ms = $1 AND at < $2",
                    )
                    .bind(step)
                    .bind(stopped)
                    .fetch_one(c)
                    .await
                })?)
            };
            read.await.unwrap()
        }
    };
    assert_eq!(
        count(1000).await,
        0,
        "fine points older than 10 s are pruned"
    );
    assert!(count(3000).await > 0, "coarse points are kept");
    let coarse = history
        .get_worker_history(authed(
            pb::GetWorkerHistoryRequest {
                worker_id: id.clone(),
                range: secs(30),
                step: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(coarse.window.unwrap().resolution, secs(3));
    let total: i64 = coarse.points.iter().map(|p| p.samples).sum();
    let fine_total: i64 = points.iter().map(|p| p.samples).sum();
    assert!(
        total >= fine_total,
        "coarse {total} covers fine {fine_total}"
    );
    assert!(coarse.points.iter().all(|p| ms(&p.at) % 3000 == 0));
    let coarse_fleet = history
        .get_fleet_history(authed(
            pb::GetFleetHistoryRequest {
                range: secs(30),
                step: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .points;
    assert!(
        !coarse_fleet.is_empty(),
        "the fleet's coarse points are rolled up"
    );
    assert!(
        coarse_fleet
            .iter()
            .all(|p| p.workers > 0.0 && p.workers <= 2.0)
    );
}

#[tokio::test]
async fn history_questions_are_checked_and_workers_are_for_administrators_only() {
    let app = fast_history_app().await;
    let admin = app.admin_token().await;
    let token = token(&app, &admin).await;
    let (id, _agent) = Beating::open(&app, &token, "history-q").await;
    let mut history = HistoryServiceClient::new(app.channel.clone());
    let ask = |range, step| pb::GetWorkerHistoryRequest {
        worker_id: id.clone(),
        range,
        step,
    };

    for (range, step, field) in [
        (None, None, "range"),
        (secs(0), None, "range"),
        (secs(-6), None, "range"),
        (secs(61), None, "range"),
        (secs(30), secs(-1), "step"),
    ] {
        let s = expect_code(
            history
                .get_worker_history(authed(ask(range, step), &admin))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), vec![field.to_string()], "{s:?}");
    }
    expect_code(
        history
            .get_worker_history(authed(
                pb::GetWorkerHistoryRequest {
                    worker_id: "no-such-worker".into(),
                    range: secs(6),
                    step: None,
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );

    let (_, customer) = app
        .register("history-customer@example.org", "a long password 1")
        .await;
    expect_code(
        history
            .get_worker_history(authed(ask(secs(6), None), &customer))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        history
            .get_fleet_history(authed(
                pb::GetFleetHistoryRequest {
                    range: secs(6),
                    step: None,
                },
                &customer,
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        history
            .get_worker_history(tonic::Request::new(ask(secs(6), None)))
            .await,
        Code::Unauthenticated,
    );
    let s = expect_code(
        history
            .get_subscription_history(authed(
                pb::GetSubscriptionHistoryRequest {
                    subscription_id: "not-a-subscription".into(),
                    range: secs(6),
                    step: None,
                },
                &customer,
            ))
            .await,
        Code::NotFound,
    );
    assert!(s.message().contains("not-a-subscription"), "{s:?}");
}

#[tokio::test]
async fn a_subscriptions_status_over_time_is_shown_to_its_owner_and_administrators_only() {
    let cluster = minispod_kube_standin::TestCluster::start().await.unwrap();
    let app = linked_app_with(&cluster, None, |a| {
        a.history.history_fine_step = Duration::from_secs(1);
        a.history.history_coarse_step = Duration::from_secs(3);
        a.history.history_fine_retention = Duration::from_secs(3600);
        a.history.history_coarse_retention = Duration::from_secs(3600);
    })
    .await;
    let mut admin = Admin::of(&app).await;
    app.until_linked(&admin.token).await;
    let (_w, _node, _stream) = worker_with_node_on(&cluster, &app, &mut admin, "m-history").await;
    let (user, owner) = customer(&app, "history-owner@example.com").await;
    cluster.delete_on_drop(&namespace_of(&user));
    let s = create(&app, &owner, "n8n", "charted", &[]).await.unwrap();
    status_until(&app, &owner, &s.id, pb::SubscriptionStatus::Running, 60).await;

    let mut history = HistoryServiceClient::new(app.channel.clone());
    let ask = |token: &str| {
        authed(
            pb::GetSubscriptionHistoryRequest {
                subscription_id: s.id.clone(),
                range: secs(600),
                step: secs(1),
            },
            token,
        )
    };
    // The status marks are written once a fine step (1 s here).
    let running = pb::SubscriptionStatus::Running as i32;
    let answer = until(10, "RUNNING in the history", || {
        let (mut h, r) = (history.clone(), ask(&owner));
        async move {
            let a = h.get_subscription_history(r).await.ok()?.into_inner();
            (a.points.last()?.status == running).then_some(a)
        }
    })
    .await;
    let window = answer.window.unwrap();
    assert_eq!(window.step, secs(1));
    // One point per step of 10 minutes (601 when the first step began
    // before the range, to line up).
    assert!(
        (600..=601).contains(&answer.points.len()),
        "{}",
        answer.points.len()
    );
    let seen: Vec<i32> = answer
        .points
        .iter()
        .flat_map(|p| p.statuses.iter().copied())
        .fold(Vec::new(), |mut v, s| {
            if v.last() != Some(&s) {
                v.push(s);
            }
            v
        });
    assert_eq!(seen.last(), Some(&running), "{seen:?}");
    assert!(
        seen.len() >= 2,
        "it was something else before RUNNING: {seen:?}"
    );
    assert_eq!(
        answer.points[0].status,
        pb::SubscriptionStatus::Unspecified as i32,
        "nothing is known of the time before it existed"
    );
    assert_eq!(
        answer.total_restarts, 0,
        "the stand-in's containers never restart"
    );

    // An administrator sees it; another customer does not learn it exists.
    let admin_answer = history
        .get_subscription_history(ask(&admin.token))
        .await
        .unwrap()
        .into_inner();
    assert!(admin_answer.points.len() >= 600);
    let (other_user, other) = customer(&app, "history-other@example.com").await;
    cluster.delete_on_drop(&namespace_of(&other_user));
    expect_code(
        history.get_subscription_history(ask(&other)).await,
        Code::NotFound,
    );
    // 10 minutes of 1 s points is too many; the message says what fits.
    let s2 = expect_code(
        history
            .get_subscription_history(authed(
                pb::GetSubscriptionHistoryRequest {
                    subscription_id: s.id.clone(),
                    range: secs(3600),
                    step: secs(1),
                },
                &owner,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s2), vec!["step".to_string()]);
}
