//! What only PostgreSQL offers: two control-plane replicas on one database
//! and one data dir (one CA, one JWT key), where any replica answers any
//! call; and a database that comes up late or goes away. Needs
//! `MINISPOD_TEST_POSTGRES` (the README's test command sets it).

use minispod_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{TempDir, authed, expect_code, start};

async fn two_replicas() -> (crate::helpers::TestApp, crate::helpers::TestApp) {
    let dir = TempDir::for_server().await;
    assert!(
        dir.1.is_some(),
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)"
    );
    let dir = std::sync::Arc::new(dir);
    let a = start(dir.clone(), |_| {}).await;
    let b = start(dir, |_| {}).await;
    (a, b)
}

#[tokio::test]
async fn a_user_created_through_one_replica_logs_in_through_another() {
    let (a, b) = two_replicas().await;
    let admin = a.admin_token().await;
    a.users()
        .create_user(authed(
            pb::CreateUserRequest {
                email: "replica@example.org".into(),
                password: "replica-password".into(),
                name: "Replica User".into(),
                role: pb::Role::User as i32,
            },
            &admin,
        ))
        .await
        .expect("created through A");
    let (access, _) = b
        .login("replica@example.org", "replica-password")
        .await
        .expect("logs in through B");
    // An access token from B works on A: one signing key.
    let profile = a
        .auth()
        .get_profile(authed(pb::GetProfileRequest {}, &access))
        .await
        .expect("B's token on A")
        .into_inner();
    assert_eq!(profile.user.unwrap().email, "replica@example.org");
    // Both serve the same CA.
    assert_eq!(a.ca_hash, b.ca_hash);
}

#[tokio::test]
async fn a_refresh_token_rotated_on_one_replica_and_replayed_on_another_is_reuse() {
    let (a, b) = two_replicas().await;
    a.register("rotate@example.org", "rotate-password").await;
    let (_, first) = a
        .login("rotate@example.org", "rotate-password")
        .await
        .unwrap();
    let second = a
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: first.clone(),
        })
        .await
        .expect("rotated on A")
        .into_inner();
    let reuse = expect_code(
        b.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: first,
            })
            .await,
        Code::Unauthenticated,
    );
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    // The whole family is revoked, on every replica.
    expect_code(
        a.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn rate_limits_hold_across_replicas() {
    let dir = TempDir::for_server().await;
    assert!(dir.1.is_some(), "replica tests need PostgreSQL");
    let dir = std::sync::Arc::new(dir);
    let limits = |args: &mut minispod_control_plane::config::ServeArgs| {
        args.login.login_ip_burst = 4;
        args.login.login_ip_per_minute = 1;
    };
    let a = start(dir.clone(), limits).await;
    let b = start(dir, limits).await;
    // Four attempts from this address, spread over both replicas, use the
    // burst; the fifth is refused by either.
    for app in [&a, &b, &a, &b] {
        expect_code(
            app.login("nobody@example.org", "wrong-password").await,
            Code::Unauthenticated,
        );
    }
    let refused = expect_code(
        b.login("nobody@example.org", "wrong-password").await,
        Code::ResourceExhausted,
    );
    assert!(refused.metadata().get("retry-after").is_some());
    expect_code(
        a.login("nobody@example.org", "wrong-password").await,
        Code::ResourceExhausted,
    );
}

/// A TCP relay on 127.0.0.1 in front of `upstream`, which the test can cut
/// (closing every connection and refusing new ones) and restore.
struct Relay {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    /// A relay on `port` (0: any) to `upstream`, passing bytes at once.
    async fn start(port: u16, upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    continue; // dropped: the connection closes at once
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// The database URL of `dir`, and where its server listens.
fn database_behind(dir: &TempDir) -> (String, std::net::SocketAddr) {
    let url = dir
        .1
        .clone()
        .expect("tests on PostgreSQL need MINISPOD_TEST_POSTGRES");
    let host_port = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next_back())
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    (
        url.clone(),
        host_port.parse().expect("a 127.0.0.1:port URL"),
    )
}

fn through(url: &str, upstream: std::net::SocketAddr, port: u16) -> String {
    url.replace(&upstream.to_string(), &format!("127.0.0.1:{port}"))
}

async fn health_of(app: &crate::helpers::TestApp, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let dir = TempDir::for_server().await;
    let (url, upstream) = database_behind(&dir);
    let relay = Relay::start(0, upstream).await;
    let relayed = through(&url, upstream, relay.port);
    let app = start(std::sync::Arc::new(dir), |args| {
        args.store.database_url = Some(relayed);
        args.store.database_acquire_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    assert_eq!(health_of(&app, "").await, ServingStatus::Serving as i32);

    relay.set_cut(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health_of(&app, "").await != ServingStatus::NotServing as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "still SERVING without a database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        health_of(&app, "minispod.v1.AuthService").await,
        ServingStatus::NotServing as i32
    );

    relay.set_cut(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health_of(&app, "").await != ServingStatus::Serving as i32 {
        assert!(std::time::Instant::now() < deadline, "not SERVING again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // And it answers calls again.
    app.admin_token().await;
}

#[tokio::test]
async fn the_control_plane_waits_for_a_database_that_comes_up_late() {
    let dir = TempDir::for_server().await;
    let (url, upstream) = database_behind(&dir);
    // Nothing listens on this port yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relayed = through(&url, upstream, port);
    let late = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        Relay::start(port, upstream).await
    });
    let started = std::time::Instant::now();
    let app = start(std::sync::Arc::new(dir), |args| {
        args.store.database_url = Some(relayed);
    })
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    let _relay = late.await.unwrap();
    app.admin_token().await;
}

#[tokio::test]
async fn with_two_replicas_sending_mail_each_mail_goes_out_once() {
    let dir = TempDir::for_server().await;
    assert!(
        dir.1.is_some(),
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)"
    );
    let sink_dir = TempDir::new();
    let sink = crate::smtp::SmtpSink::start(&sink_dir.0);
    let dir = std::sync::Arc::new(dir);
    let a = start(dir.clone(), |x| crate::mail::with_mail(x, &sink)).await;
    let b = start(dir, |x| crate::mail::with_mail(x, &sink)).await;
    let admin = a.admin_token().await;
    let emails: Vec<String> = (0..12).map(|i| format!("twice{i}@example.org")).collect();
    for email in &emails {
        a.users()
            .create_user(authed(
                pb::CreateUserRequest {
                    email: email.clone(),
                    password: "twice-password-1".into(),
                    name: "Twice".into(),
                    role: pb::Role::User as i32,
                },
                &admin,
            ))
            .await
            .unwrap();
    }
    // Half through each replica: both delivery workers see every message.
    for (i, email) in emails.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        app.auth()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: email.clone(),
            })
            .await
            .unwrap();
    }
    let wait = std::time::Duration::from_secs(20);
    for email in &emails {
        sink.wait_for(email, 1, wait).await;
    }
    // A later mail is the barrier for duplicates of the first ones.
    b.auth()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: emails[0].clone(),
        })
        .await
        .unwrap();
    sink.wait_for(&emails[0], 2, wait).await;
    for email in &emails[1..] {
        assert_eq!(sink.received_by(email).len(), 1, "{email} got a duplicate");
    }
    assert_eq!(sink.received().len(), emails.len() + 1);
}

/// Two replicas on one database, both linked to one stand-in cluster, each
/// holding the stream of one worker with a node of its own (4 CPUs, 8 GiB);
/// and a pool on the database to read leases.
struct LinkedReplicas {
    cluster: minispod_kube_standin::TestCluster,
    a: crate::helpers::TestApp,
    b: crate::helpers::TestApp,
    /// A's and B's names among the replicas (lease owner ids).
    ids: (String, String),
    db: sqlx::PgPool,
    _workers: Vec<crate::workers::Stream>,
}

/// [`LinkedReplicas`] with a resync of `resync`: objects are re-applied
/// every sixth resync, so a long one keeps the cluster's request log to the
/// applies that changes cause.
async fn linked_replicas(resync: std::time::Duration) -> LinkedReplicas {
    use crate::subscriptions::{linked_app_with, until, worker_with_node_on};
    let cluster = minispod_kube_standin::TestCluster::start().await.unwrap();
    let dir = TempDir::for_server().await;
    let url = dir.1.clone().expect(
        "replica tests need PostgreSQL: set MINISPOD_TEST_POSTGRES (the README's test command does)",
    );
    let dir = std::sync::Arc::new(dir);
    let settings = move |a: &mut minispod_control_plane::config::ServeArgs| {
        a.subscriptions.subscription_resync = resync;
        // Customers' own limits past the cluster's room: these tests are
        // about the cluster's capacity and the replicas.
        a.subscriptions.tenant.subscriptions = 100;
        a.subscriptions.tenant.cpu_millicores = 100_000;
        a.subscriptions.tenant.memory_mb = 100_000;
        a.subscriptions.tenant.storage_gb = 1000;
    };
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let replicas = async || -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM replicas ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap()
    };
    let a = linked_app_with(&cluster, Some(dir.clone()), settings).await;
    let a_id = replicas().await.pop().expect("A is the only replica yet");
    let b = linked_app_with(&cluster, Some(dir), settings).await;
    let b_id = replicas()
        .await
        .into_iter()
        .find(|id| *id != a_id)
        .expect("B joined");
    let mut workers = Vec::new();
    let mut streams = Vec::new();
    for (app, machine) in [(&a, "m-replica-a"), (&b, "m-replica-b")] {
        let mut admin = crate::workers::Admin::of(app).await;
        let (worker, _node, stream) = worker_with_node_on(&cluster, app, &mut admin, machine).await;
        workers.push(worker);
        streams.push(stream);
    }
    // Both replicas' cluster links see both nodes (admission on either
    // counts their capacity).
    for app in [&a, &b] {
        let admin = crate::workers::Admin::of(app).await;
        for worker in &workers {
            until(20, "the workers' nodes on both replicas", || {
                let (mut c, t, w) = (admin.client.clone(), admin.token.clone(), worker.clone());
                async move {
                    let w = c
                        .get_worker(authed(
                            pb::GetWorkerRequest {
                                lookup: Some(pb::get_worker_request::Lookup::Id(w)),
                            },
                            &t,
                        ))
                        .await
                        .ok()?
                        .into_inner()
                        .worker?;
                    w.node.is_some().then_some(())
                }
            })
            .await;
        }
    }
    LinkedReplicas {
        cluster,
        a,
        b,
        ids: (a_id, b_id),
        db,
        _workers: streams,
    }
}

/// Every subscription as `app` lists it: (id, status, workers of its
/// ready pods), by id.
async fn listing(app: &crate::helpers::TestApp, token: &str) -> Vec<(String, i32, Vec<String>)> {
    let mut all: Vec<_> = crate::subscriptions::subs(app)
        .list_subscriptions(authed(
            pb::ListSubscriptionsRequest {
                all: true,
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("ListSubscriptions")
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|s| {
            let on = s
                .components
                .iter()
                .flat_map(|c| c.pods.iter().filter(|p| p.ready))
                .map(|p| p.worker_id.clone())
                .collect();
            (s.id, s.status, on)
        })
        .collect();
    all.sort();
    all
}

/// Server-side applies of the Deployment `name` the stand-in served whose
/// body satisfies `with`.
fn deployment_applies(
    standin: &minispod_kube_standin::StandIn,
    name: &str,
    with: impl Fn(&serde_json::Value) -> bool,
) -> usize {
    standin
        .requests()
        .iter()
        .filter(|r| {
            r.verb == minispod_kube_standin::Verb::Patch
                && r.content_type.as_deref() == Some("application/apply-patch+yaml")
                && r.path.ends_with(&format!("/deployments/{name}"))
                && r.body.as_ref().is_some_and(&with)
        })
        .count()
}

/// Whether an applied Deployment sets Ghost's log level to `level`.
fn log_level(level: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |body| {
        body["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .is_some_and(|env| {
                env.iter()
                    .any(|e| e["name"] == "logging__level" && e["value"] == level)
            })
    }
}

#[tokio::test]
async fn one_replica_at_a_time_acts_on_a_subscription_and_the_survivor_takes_over() {
    use crate::subscriptions::{create, customer, until};
    let r = linked_replicas(std::time::Duration::from_secs(5)).await;
    let Some(standin) = r.cluster.standin() else {
        eprintln!("skipped: needs the stand-in's request log");
        return;
    };
    let (ann_id, ann) = customer(&r.a, "ann@example.com").await;
    let (bob_id, bob) = customer(&r.b, "bob@example.com").await;
    for user in [&ann_id, &bob_id] {
        r.cluster
            .delete_on_drop(&crate::subscriptions::namespace_of(user));
    }
    let mut made = Vec::new();
    for (app, token, name) in [
        (&r.a, &ann, "via-a-one"),
        (&r.b, &bob, "via-b-one"),
        (&r.a, &ann, "via-a-two"),
        (&r.b, &bob, "via-b-two"),
    ] {
        let s = create(app, token, "ghost", name, &[]).await.unwrap();
        made.push((s.id, name));
    }

    // Both replicas list the four RUNNING, alike: same statuses, same pods.
    let admin = r.a.admin_token().await;
    let running = pb::SubscriptionStatus::Running as i32;
    let agreed = until(30, "both replicas to list the four RUNNING", || {
        let (a, b, admin) = (&r.a, &r.b, admin.clone());
        async move {
            let (on_a, on_b) = (listing(a, &admin).await, listing(b, &admin).await);
            (on_a.len() == 4
                && on_a
                    .iter()
                    .all(|(_, s, pods)| *s == running && !pods.is_empty())
                && on_a == on_b)
                .then_some(on_a)
        }
    })
    .await;
    assert_eq!(agreed.len(), 4);

    // One replica acted on each: its Deployment was applied once, for its
    // one generation (a second replica acting would have applied it too),
    // and the row names one live replica as the holder of its lease.
    for (_, name) in &made {
        assert_eq!(
            deployment_applies(standin, &format!("{name}-ghost"), |_| true),
            1,
            "{name}: applied by one replica"
        );
    }
    let leases: Vec<(String, String)> =
        sqlx::query_as("SELECT id, lease_owner FROM subscriptions ORDER BY id")
            .fetch_all(&r.db)
            .await
            .unwrap();
    let (a_id, b_id) = r.ids.clone();
    assert_eq!(leases.len(), 4);
    assert!(
        leases.iter().all(|(_, o)| *o == a_id || *o == b_id),
        "{leases:?}"
    );

    // The holder of one subscription's lease stops (its worker's stream
    // goes with it): its leases are free at once, and the survivor applies
    // a change to that subscription within seconds.
    let (moved, name) = made[0].clone();
    let holder = &leases.iter().find(|(id, _)| *id == moved).unwrap().1;
    let (gone, survivor, survivor_id) = if *holder == a_id {
        (r.a, r.b, b_id)
    } else {
        (r.b, r.a, a_id)
    };
    gone.stop().await;
    let admin = survivor.admin_token().await;
    let changed = std::time::Instant::now();
    crate::subscriptions::subs(&survivor)
        .update_subscription(authed(
            pb::UpdateSubscriptionRequest {
                id: moved.clone(),
                variables: [("LOG_LEVEL".to_string(), "warn".to_string())].into(),
            },
            &admin,
        ))
        .await
        .expect("updated through the survivor");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::all(r.cluster.client().await);
    let deployment = format!("{name}-ghost");
    until(10, "the change applied by the survivor", || {
        let (d, deployment) = (deployments.clone(), deployment.clone());
        async move {
            let list = d.list(&Default::default()).await.ok()?;
            let dep = list
                .items
                .into_iter()
                .find(|d| d.metadata.name.as_deref() == Some(deployment.as_str()))?;
            let env = dep.spec?.template.spec?.containers[0].env.clone()?;
            env.iter()
                .any(|e| e.name == "logging__level" && e.value.as_deref() == Some("warn"))
                .then_some(())
        }
    })
    .await;
    println!(
        "the lease holder stopped; an update through the other replica reached the cluster in {} ms",
        changed.elapsed().as_millis()
    );
    // The new generation was applied once (the survivor may also have
    // applied the old one when it took the lease over: it cannot know
    // what the stopped replica applied).
    assert_eq!(
        deployment_applies(standin, &deployment, log_level("warn")),
        1
    );
    let owner: String = sqlx::query_scalar("SELECT lease_owner FROM subscriptions WHERE id = $1")
        .bind(&moved)
        .fetch_one(&r.db)
        .await
        .unwrap();
    assert_eq!(owner, survivor_id, "the survivor holds the lease now");
    // Running again (on the survivor's worker, if it ran on the other one).
    crate::subscriptions::status_until(
        &survivor,
        &admin,
        &moved,
        pb::SubscriptionStatus::Running,
        30,
    )
    .await;
}

/// The next UPSERTED event of subscription `id` that satisfies `pred`,
/// within `secs`.
async fn next_upsert(
    watch: &mut tonic::Streaming<pb::WatchSubscriptionsResponse>,
    id: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&pb::Subscription, Option<&pb::SubscriptionEvent>) -> bool,
) -> (pb::Subscription, Option<pb::SubscriptionEvent>) {
    let within = std::time::Duration::from_secs(secs);
    tokio::time::timeout(within, async {
        loop {
            let e = watch
                .message()
                .await
                .expect("the watch answers")
                .expect("the watch goes on");
            if e.r#type != pb::SubscriptionEventType::Upserted as i32 {
                continue;
            }
            let s = e.subscription.unwrap();
            if s.id == id && pred(&s, e.event.as_ref()) {
                return (s, e.event);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no watch event within {within:?}: {what}"))
}

#[tokio::test]
async fn a_watch_on_one_replica_sees_what_another_replicas_reconciler_and_api_change() {
    use crate::subscriptions::{create, customer, linked_app_with, subs, worker_with_node_on};
    let cluster = minispod_kube_standin::TestCluster::start().await.unwrap();
    let dir = TempDir::for_server().await;
    assert!(dir.1.is_some(), "replica tests need PostgreSQL");
    let dir = std::sync::Arc::new(dir);
    // B is linked to the cluster and reconciles; A is not linked, so it
    // runs no reconciler and its watchers learn of changes only from B.
    let b = linked_app_with(&cluster, Some(dir.clone()), |_| {}).await;
    let a = start(dir, |_| {}).await;
    let mut admin = crate::workers::Admin::of(&b).await;
    let (_w, _n, _stream) = worker_with_node_on(&cluster, &b, &mut admin, "m-relay").await;
    let (user, token) = customer(&b, "watcher@example.com").await;
    cluster.delete_on_drop(&crate::subscriptions::namespace_of(&user));

    let mut watch = subs(&a)
        .watch_subscriptions(authed(pb::WatchSubscriptionsRequest::default(), &token))
        .await
        .expect("watch on A")
        .into_inner();
    loop {
        let e = watch.message().await.unwrap().unwrap();
        if e.r#type == pb::SubscriptionEventType::SnapshotEnd as i32 {
            break;
        }
    }
    let s = create(&b, &token, "ghost", "relayed", &[])
        .await
        .expect("created through B");
    next_upsert(&mut watch, &s.id, 5, "the creation", |_, _| true).await;
    let running = pb::SubscriptionStatus::Running as i32;
    let (_, event) = next_upsert(
        &mut watch,
        &s.id,
        30,
        "RUNNING from B's reconciler",
        |s, e| s.status == running && e.is_some(),
    )
    .await;
    assert_eq!(event.unwrap().status, running, "with its event");

    let admin_token = b.admin_token().await;
    let suspended_at = std::time::Instant::now();
    subs(&b)
        .suspend_subscription(authed(
            pb::SuspendSubscriptionRequest {
                id: s.id.clone(),
                reason: "unpaid invoice".into(),
            },
            &admin_token,
        ))
        .await
        .expect("suspended through B");
    let suspended = pb::SubscriptionStatus::Suspended as i32;
    let (seen, event) = next_upsert(&mut watch, &s.id, 5, "SUSPENDED through B", |s, _| {
        s.status == suspended
    })
    .await;
    println!(
        "suspend through B to the watch on A: {} ms",
        suspended_at.elapsed().as_millis()
    );
    assert!(seen.status_reason.contains("unpaid invoice"));
    let event = event.expect("the status change comes with its event");
    assert_eq!(event.status, suspended);
    assert!(event.reason.contains("unpaid invoice"), "{}", event.reason);

    // B's reconciler removes a subscription deleted through B: A's watch
    // hears that it is gone.
    subs(&b)
        .delete_subscription(authed(
            pb::DeleteSubscriptionRequest {
                id: s.id.clone(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("deleted through B");
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let e = watch.message().await.unwrap().expect("the watch goes on");
            if e.r#type == pb::SubscriptionEventType::Deleted as i32 {
                assert_eq!(e.subscription.unwrap().id, s.id);
                return;
            }
        }
    })
    .await
    .expect("the deletion on A's watch");
}

#[tokio::test]
async fn concurrent_creates_through_two_replicas_are_admitted_only_as_far_as_the_capacity_goes() {
    // Two nodes of 4 CPUs and 8 GiB; a Ghost pod requests 260m and 528 MiB
    // (the owner's gate's 10m and 16 MiB included): 30 fit.
    let r = linked_replicas(std::time::Duration::from_secs(1)).await;
    let (user, token) = crate::subscriptions::customer(&r.a, "race@example.com").await;
    r.cluster
        .delete_on_drop(&crate::subscriptions::namespace_of(&user));
    let calls: Vec<_> = (0..48)
        .map(|i| {
            let app = if i % 2 == 0 { &r.a } else { &r.b };
            let (mut client, token) = (crate::subscriptions::subs(app), token.clone());
            tokio::spawn(async move {
                client
                    .create_subscription(authed(
                        pb::CreateSubscriptionRequest {
                            service_id: "ghost".into(),
                            name: format!("race-{i}"),
                            variables: Default::default(),
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await
                    .map(drop)
            })
        })
        .collect();
    let mut admitted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => admitted += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                assert_eq!(crate::words::reason(&s), "NO_CAPACITY", "{s:?}");
            }
        }
    }
    assert_eq!(admitted, 30);
}

#[tokio::test]
async fn a_worker_offline_past_the_grace_is_told_once_although_both_replicas_saw_it() {
    use std::time::Duration;

    use crate::{
        helpers::ADMIN_EMAIL,
        mail::with_mail,
        notifications::{WebhookSink, online_worker, opt_in, until_online},
        smtp::SmtpSink,
        workers::{Admin, connect},
    };

    let dir = TempDir::for_server().await;
    assert!(dir.1.is_some(), "replica tests need PostgreSQL");
    let sink = SmtpSink::start(&dir.0);
    let hooks = WebhookSink::start(&dir.0).await;
    let dir = std::sync::Arc::new(dir);
    let configure = |a: &mut minispod_control_plane::config::ServeArgs| {
        with_mail(a, &sink);
        crate::notifications::allow_local_webhooks(a);
        a.mail.webhook_ca_file = Some(hooks.ca_file.clone());
        a.notify.notify_offline_grace = Duration::from_secs(1);
    };
    let a = start(dir.clone(), configure).await;
    let b = start(dir, configure).await;
    let token = b.admin_token().await;
    let secret = opt_in(&b, &token, &hooks.url, true).await;

    // The worker's stream is on A; B hears of its changes through the relay.
    let mut admin = Admin::of(&a).await;
    let (id, stream, _, agent) = online_worker(&a, &mut admin, "replicated").await;
    let mut on_b = Admin::of(&b).await;
    until_online(&mut on_b, &id, true).await;
    drop(stream);
    until_online(&mut on_b, &id, false).await;
    let offline = hooks
        .wait_for(1, |h| h.event() == "worker_offline" && h.worker_id() == id)
        .await;
    offline[0].assert_signed_with(&secret);

    // Back, now through B: its return is told once too, and it is the
    // barrier after which a second offline notice would have shown.
    let channel_b = crate::workers::mtls(&b, &agent).await;
    let mut stream = connect(channel_b, "replicated").await.unwrap();
    stream.beat(true).await;
    hooks
        .wait_for(1, |h| h.event() == "worker_online" && h.worker_id() == id)
        .await;
    let mails = sink.wait_for(ADMIN_EMAIL, 3, Duration::from_secs(30)).await;
    let count = |event: &str| {
        hooks
            .received()
            .iter()
            .filter(|h| h.event() == event && h.worker_id() == id)
            .count()
    };
    assert_eq!(
        (
            count("worker_enrolled"),
            count("worker_offline"),
            count("worker_online")
        ),
        (1, 1, 1)
    );
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects
            .iter()
            .filter(|s| **s == "Worker host-replicated is offline")
            .count(),
        1,
        "{subjects:?}"
    );
    assert_eq!(mails.len(), 3, "enrolled, offline, online: {subjects:?}");
}
