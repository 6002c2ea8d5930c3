//! Enrollment: bad tokens refused with nothing written, a failing K3s join
//! hook, static tokens from a file and the enrollment rate limit.

use minispod_control_plane::store::{Db, StoreOptions, Tx};
use minispod_proto::v1::{self as pb, WorkerStatus, agent_service_client::AgentServiceClient};
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollment_tokens_are_refused_and_nothing_is_written() {
    let cp = ControlPlane::start().await;
    let once = cp.token(1).await;
    raw_enroll(&cp, &once, "m1").await.expect("first use");
    let used_up = raw_enroll(&cp, &once, "m2").await.unwrap_err();
    assert_eq!(used_up.code(), Code::Unauthenticated);
    assert!(
        used_up.message().contains("used up"),
        "{}",
        used_up.message()
    );

    let wrong = format!("{}.{}", once.split('.').next().unwrap(), "x".repeat(43));
    assert_eq!(
        raw_enroll(&cp, &wrong, "m3").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        raw_enroll(&cp, "garbage", "m3").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let revoked = cp.token(0).await;
    let id = revoked.split('.').next().unwrap().to_owned();
    cp.workers()
        .revoke_enrollment_token(cp.authed(pb::RevokeEnrollmentTokenRequest { id: id.clone() }))
        .await
        .unwrap();
    let e = raw_enroll(&cp, &revoked, "m4").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"));

    // Expiry: age a token in the store (the API's shortest TTL is a minute).
    let expired = cp.token(0).await;
    let db = Db::connect(cp.dir.1.as_deref(), &cp.dir.0, &StoreOptions::default())
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    let sql = "UPDATE enrollment_tokens SET expires_at = 1 WHERE id = $1";
    let expired_id = expired.split('.').next().unwrap();
    let aged = match &mut tx {
        Tx::Sqlite(t, _) => sqlx::query(sql)
            .bind(expired_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()),
        Tx::Postgres(t) => sqlx::query(sql)
            .bind(expired_id)
            .execute(&mut **t)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(aged.unwrap(), 1);
    tx.commit().await.unwrap();
    db.close().await;
    let e = raw_enroll(&cp, &expired, "m5").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"));

    let workers = cp.list().await;
    assert_eq!(
        workers.len(),
        1,
        "only the one good enrollment wrote a worker"
    );
    let tokens = cp
        .workers()
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: true,
        }))
        .await
        .unwrap()
        .into_inner()
        .enrollment_tokens;
    let revoked_row = tokens.iter().find(|t| t.id == id).unwrap();
    assert_eq!((revoked_row.uses, revoked_row.revoked), (0, true));
    let active = cp
        .workers()
        .list_enrollment_tokens(cp.authed(pb::ListEnrollmentTokensRequest {
            include_inactive: false,
        }))
        .await
        .unwrap()
        .into_inner()
        .enrollment_tokens;
    assert!(
        active.is_empty(),
        "used-up, revoked and expired tokens are not listed as active: {active:?}"
    );

    // Invalid CSR and facts are INVALID_ARGUMENT.
    let good = cp.token(0).await;
    let e = AgentServiceClient::new(cp.channel.clone())
        .enroll(pb::EnrollRequest {
            token: good,
            csr_pem: "not a csr".into(),
            facts: Some(pb::MachineFacts {
                hostname: "h".into(),
                machine_id: "../../x".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_k3s_join_hook_is_reported_and_the_worker_is_not_ready() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let k3s_token = dir.0.join("k3s-token");
    std::fs::write(&k3s_token, "K10secret::server:abc\n").unwrap();
    let cp = ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.fleet.k3s_server_url = "https://k3s.example.org:6443".into();
        a.fleet.k3s_token_file = Some(k3s_token.clone());
    })
    .await;
    let mut watch = cp.watch().await;
    let state = TempDir::new();
    let _agent = spawn_agent(
        &cp,
        &state.0,
        &cp.token(0).await,
        &["--k3s-join-command", "echo no k3s here >&2; exit 1"],
    );
    let (w, _) = watch
        .until("NOT_READY", |w| status(w) == WorkerStatus::NotReady)
        .await;
    assert!(w.online && !w.ready && !w.schedulable);
    assert!(
        w.k3s_join_error.contains("no k3s here"),
        "{}",
        w.k3s_join_error
    );
    let written = std::fs::read_to_string(state.0.join("k3s.yaml")).unwrap();
    assert!(
        written.contains("https://k3s.example.org:6443")
            && written.contains("K10secret::server:abc")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_token_from_a_file_enrolls_and_enrollment_is_rate_limited() {
    let dir = std::sync::Arc::new(TempDir::for_server().await);
    let token_file = dir.0.join("enroll.token");
    std::fs::write(&token_file, "static-token-for-unattended-installs\n").unwrap();
    let cp = ControlPlane::start_in(dir.clone(), free_port(), |a| {
        a.fleet.enrollment_token_file = Some(token_file.clone());
        // Two machines share it here; by default a static token admits one.
        a.fleet.enrollment_token_max_uses = 2;
        a.fleet.enroll_burst = 3;
        a.fleet.enroll_per_second = 1;
    })
    .await;
    raw_enroll(&cp, "static-token-for-unattended-installs", "s1")
        .await
        .expect("static token");
    raw_enroll(&cp, "static-token-for-unattended-installs", "s2")
        .await
        .expect("the static token's second use");
    let _ = raw_enroll(&cp, "wrong-static-token", "s3").await;
    let limited = raw_enroll(&cp, "static-token-for-unattended-installs", "s4")
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(cp.list().await.len(), 2);
}
