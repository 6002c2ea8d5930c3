//! Administering workers: who may, cordon and maintenance, lookups,
//! statistics and listing totals while heartbeats flush.

use std::time::{Duration, Instant};

use minispod_agent::tls::Trust;
use minispod_proto::v1::{self as pb, WorkerStatus, auth_service_client::AuthServiceClient};
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_administration_needs_an_administrator() {
    let cp = ControlPlane::start().await;
    let user = AuthServiceClient::new(cp.channel.clone())
        .register(pb::RegisterRequest {
            email: "u@example.org".into(),
            password: "user-password".into(),
            name: "U".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut w = cp.workers();
    for token in [None, Some(user.as_str())] {
        let want = if token.is_some() {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        assert_eq!(
            w.list_workers(maybe_authed(pb::ListWorkersRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.create_enrollment_token(maybe_authed(
                pb::CreateEnrollmentTokenRequest::default(),
                token
            ))
            .await
            .unwrap_err()
            .code(),
            want
        );
        assert_eq!(
            w.get_worker_stats(maybe_authed(pb::GetWorkerStatsRequest {}, token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.watch_workers(maybe_authed(pb::WatchWorkersRequest::default(), token))
                .await
                .unwrap_err()
                .code(),
            want
        );
        assert_eq!(
            w.delete_worker(maybe_authed(
                pb::DeleteWorkerRequest { id: "x".into() },
                token
            ))
            .await
            .unwrap_err()
            .code(),
            want
        );
    }
    let tokens = w
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(tokens.enrollment_tokens.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_maintenance_lookups_and_stats_behave() {
    let cp = ControlPlane::start().await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let token = cp.token(0).await;
    let mut agent = spawn_agent(&cp, &state.0, &token, &[]);
    let (w, _) = watch
        .until("ACTIVE", |w| status(w) == WorkerStatus::Active)
        .await;
    let mut api = cp.workers();

    let by_id = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Id(w.id.clone())),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    let by_name = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Name(w.name.clone())),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(
        (by_id.id.as_str(), by_name.id.as_str()),
        (w.id.as_str(), w.id.as_str())
    );
    let missing = api
        .get_worker(cp.authed(pb::GetWorkerRequest {
            lookup: Some(pb::get_worker_request::Lookup::Name("nope".into())),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Cordon: still ACTIVE, no longer schedulable.
    let c = api
        .set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
            id: w.id.clone(),
            schedulable: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert!(c.cordoned && !c.schedulable && status(&c) == WorkerStatus::Active);
    watch.until("cordoned", |x| x.cordoned).await;
    let unsched = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            schedulable: Some(false),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unsched.total_size, 1);
    api.set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
        id: w.id.clone(),
        schedulable: true,
    }))
    .await
    .unwrap();

    // Labels, taints, notes.
    let u = api
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: w.id.clone(),
            labels: Some(pb::LabelMap {
                labels: [("zone".to_string(), "eu-1".to_string())].into(),
            }),
            taints: Some(pb::TaintList {
                taints: vec![pb::Taint {
                    key: "dedicated".into(),
                    value: "db".into(),
                    effect: "NoSchedule".into(),
                }],
            }),
            notes: Some("rack 4".into()),
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(
        (u.labels["zone"].as_str(), u.taints.len(), u.notes.as_str()),
        ("eu-1", 1, "rack 4")
    );
    let bad = api
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: w.id.clone(),
            taints: Some(pb::TaintList {
                taints: vec![pb::Taint {
                    key: "k".into(),
                    value: "".into(),
                    effect: "Sometimes".into(),
                }],
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Maintenance survives a reconnect.
    let m = api
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: w.id.clone(),
            status: WorkerStatus::Maintenance as i32,
        }))
        .await
        .unwrap()
        .into_inner()
        .worker
        .unwrap();
    assert_eq!(status(&m), WorkerStatus::Maintenance);
    agent.child.start_kill().unwrap();
    watch
        .until("offline in maintenance", |x| {
            !x.online && status(x) == WorkerStatus::Maintenance
        })
        .await;
    let _agent = spawn_agent(&cp, &state.0, &token, &[]);
    watch
        .until("online in maintenance", |x| {
            x.online && status(x) == WorkerStatus::Maintenance
        })
        .await;
    api.set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
        id: w.id.clone(),
        status: WorkerStatus::Active as i32,
    }))
    .await
    .unwrap();
    watch
        .until("ACTIVE after maintenance", |x| {
            status(x) == WorkerStatus::Active
        })
        .await;
    let bad = api
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: w.id.clone(),
            status: WorkerStatus::Inactive as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Let a heartbeat arrive and be flushed.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let stats = api
        .get_worker_stats(cp.authed(pb::GetWorkerStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.total, stats.online, stats.offline, stats.schedulable),
        (1, 1, 0, 1)
    );
    let active = stats
        .by_status
        .iter()
        .find(|s| s.status == WorkerStatus::Active as i32)
        .unwrap();
    assert_eq!(active.count, 1);
    assert_eq!(
        stats.capacity.unwrap().cpu_millicores,
        i64::from(w.cpu_cores) * 1000
    );
    assert!(stats.memory_utilization_percent > 0.0 && stats.memory_utilization_percent <= 100.0);

    let filtered = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            status: WorkerStatus::Inactive as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.total_size, 0);
    let found = api
        .list_workers(cp.authed(pb::ListWorkersRequest {
            search: w.name.to_uppercase(),
            online: Some(true),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total_size, 1);
}

/// The total of a one-worker page of `req`, and that page's next token.
async fn total_of(cp: &ControlPlane, req: pb::ListWorkersRequest) -> (i64, String) {
    let r = cp
        .workers()
        .list_workers(cp.authed(pb::ListWorkersRequest {
            page_size: 1,
            ..req
        }))
        .await
        .unwrap()
        .into_inner();
    (r.total_size, r.next_page_token)
}

fn with_status(s: WorkerStatus) -> pb::ListWorkersRequest {
    pb::ListWorkersRequest {
        status: s as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_totals_follow_every_change_while_heartbeats_flush() {
    // Totals are counted once and kept until a write may change them; pages
    // of one worker over four make every total a count, not the page length.
    let cp = ControlPlane::start().await;
    let token = cp.token(0).await;
    let swarm = minispod_agent::swarm::Swarm::start(minispod_agent::swarm::SwarmConfig {
        servers: vec![cp.url()],
        token: token.into(),
        trust: Trust::CaPem(cp.ca_pem.clone()),
        agents: 4,
        first_index: 0,
        state_root: cp.dir.0.join("agents"),
        enroll_concurrency: 4,
        max_backoff: Duration::from_secs(1),
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while total_of(&cp, with_status(WorkerStatus::Active)).await.0 < 4 {
        assert!(Instant::now() < deadline, "not all 4 ACTIVE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asked again across several heartbeat flushes: still exact, and paging
    // on gives the other workers under the same total.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 4);
    }
    let mut seen = std::collections::HashSet::new();
    let mut next = String::new();
    loop {
        let r = cp
            .workers()
            .list_workers(cp.authed(pb::ListWorkersRequest {
                page_size: 1,
                page_token: next,
                search: "SWARM-".into(),
                online: Some(true),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.total_size, 4);
        seen.extend(r.workers.iter().map(|w| w.id.clone()));
        next = r.next_page_token;
        if next.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 4, "every worker once over the pages");

    let ids: Vec<String> = swarm.agents.iter().map(|a| a.worker_id.clone()).collect();
    // Each change shows in the very next total, with no waiting.
    cp.workers()
        .set_worker_status(cp.authed(pb::SetWorkerStatusRequest {
            id: ids[0].clone(),
            status: WorkerStatus::Maintenance as i32,
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 3);
    assert_eq!(
        total_of(&cp, with_status(WorkerStatus::Maintenance))
            .await
            .0,
        1
    );
    let schedulable = || pb::ListWorkersRequest {
        schedulable: Some(true),
        ..Default::default()
    };
    assert_eq!(total_of(&cp, schedulable()).await.0, 3);
    cp.workers()
        .set_worker_schedulable(cp.authed(pb::SetWorkerSchedulableRequest {
            id: ids[1].clone(),
            schedulable: false,
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, schedulable()).await.0, 2);
    cp.workers()
        .update_worker(cp.authed(pb::UpdateWorkerRequest {
            id: ids[2].clone(),
            notes: Some("notes are not filtered on".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(total_of(&cp, schedulable()).await.0, 2);

    // The fleet drops: once GetWorker shows each offline, so do the totals.
    swarm.stop().await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let w = cp
                .workers()
                .get_worker(cp.authed(pb::GetWorkerRequest {
                    lookup: Some(pb::get_worker_request::Lookup::Id(id.clone())),
                }))
                .await
                .unwrap()
                .into_inner()
                .worker
                .unwrap();
            if !w.online {
                break;
            }
            assert!(Instant::now() < deadline, "{id} still online");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(total_of(&cp, with_status(WorkerStatus::Active)).await.0, 0);
    assert_eq!(
        total_of(&cp, with_status(WorkerStatus::Inactive)).await.0,
        3
    );
    let online = pb::ListWorkersRequest {
        online: Some(true),
        ..Default::default()
    };
    assert_eq!(total_of(&cp, online).await.0, 0);
    assert_eq!(total_of(&cp, schedulable()).await.0, 0);
    assert_eq!(total_of(&cp, Default::default()).await.0, 4);
}
